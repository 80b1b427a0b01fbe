//! The WebSocket message formats: commands from clients and the replies and signals to them.
//!
//! Group events (`notification.created`, `notification.confirmed`) are encoded by the domain
//! crate once per event; everything here is per socket.

use axum::extract::ws::Utf8Bytes;
use herald_core::Notification;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The largest text frame a client may send, in bytes; a larger one closes the socket with 1009.
pub const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

/// Close codes the server sends, with what a client should do about each.
pub mod close {
    /// The server is shutting down or restarting: reconnect (to another instance) with since.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent a frame over 64 KiB: send smaller commands, then reconnect with since.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Storage failed while the server replayed events: reconnect with since after a pause.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The access token expired: get a new token, then reconnect with since.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The client did not answer pings: reconnect with since.
    pub const PING_TIMEOUT: u16 = 4002;
    /// The client read too slowly and its queue filled up: reconnect with since.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A command from a client, as far as its `type` is concerned.
#[derive(Debug)]
pub enum Command {
    Send(SendCommand),
    Confirm { notification_id: Value },
    Ping,
}

/// The fields of `send_notification`, kept raw so that the service validates them exactly as it
/// validates a REST request.
#[derive(Debug, Default)]
pub struct SendCommand {
    pub content: Option<Value>,
    pub receiver_group: Option<Value>,
    pub priority: Option<Value>,
    pub sender_group: Option<Value>,
}

/// A parsed client frame: the command, or the error to send back, with the echoed request id.
#[derive(Debug)]
pub struct Parsed {
    pub request_id: Option<Value>,
    pub command: Result<Command, CommandError>,
}

/// A rejected command, sent back as an `error` frame.
#[derive(Debug, Clone)]
pub struct CommandError {
    pub code: &'static str,
    pub message: String,
    /// Extra members of the frame, such as `field` or `confirmed_by`.
    pub extra: Map<String, Value>,
}

impl CommandError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new("invalid_field", format!("{field}: {}", message.into()));
        error.extra.insert("field".into(), json!(field));
        error
    }
}

impl From<ApiError> for CommandError {
    fn from(error: ApiError) -> Self {
        let mut members = error.problem();
        let message = match members.remove("detail") {
            Some(Value::String(detail)) => detail,
            _ => error.to_string(),
        };
        for key in ["type", "title", "status", "code"] {
            members.remove(key);
        }
        Self {
            code: error.code(),
            message,
            extra: members,
        }
    }
}

/// Parses a client text frame. Every failure becomes an error frame; none closes the socket.
pub fn parse(text: &str) -> Parsed {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return Parsed {
                request_id: None,
                command: Err(CommandError::new(
                    "malformed_json",
                    format!("frame is not valid JSON: {error}"),
                )),
            };
        }
    };
    let Value::Object(mut fields) = value else {
        return Parsed {
            request_id: None,
            command: Err(CommandError::new(
                "malformed_json",
                "frame must be a JSON object such as {\"type\":\"ping\"}",
            )),
        };
    };

    let request_id = fields.remove("request_id");
    let command = match fields.remove("type") {
        None => Err(CommandError::invalid_field(
            "type",
            "is required; use send_notification, confirm_notification or ping",
        )),
        Some(Value::String(kind)) => match kind.as_str() {
            "send_notification" => Ok(Command::Send(SendCommand {
                content: fields.remove("content"),
                receiver_group: fields.remove("receiver_group"),
                priority: fields.remove("priority"),
                sender_group: fields.remove("sender_group"),
            })),
            "confirm_notification" => match fields.remove("notification_id") {
                Some(id) => Ok(Command::Confirm {
                    notification_id: id,
                }),
                None => Err(CommandError::invalid_field(
                    "notification_id",
                    "is required",
                )),
            },
            "ping" => Ok(Command::Ping),
            other => Err(CommandError::new(
                "unknown_type",
                format!(
                    "unknown command type {other:?}; use send_notification, confirm_notification or ping"
                ),
            )),
        },
        Some(_) => Err(CommandError::invalid_field("type", "must be a string")),
    };
    Parsed {
        request_id,
        command,
    }
}

/// Reads an optional string field of a command, naming the field when it has another type.
pub fn string_field(field: &str, value: Option<Value>) -> Result<Option<String>, CommandError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(CommandError::invalid_field(field, "must be a string")),
    }
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a Value>,
    notification: &'a Notification,
}

/// `{"type":"ack","request_id","notification"}`; the per-user read flag is left out, as in events.
pub fn ack(request_id: Option<&Value>, notification: &Notification) -> Utf8Bytes {
    let mut shared = notification.clone();
    shared.read = None;
    encode(&Ack {
        kind: "ack",
        request_id,
        notification: &shared,
    })
}

/// `{"type":"error","request_id","code","message",...}`.
pub fn error(request_id: Option<&Value>, error: &CommandError) -> Utf8Bytes {
    let mut frame = Map::new();
    frame.insert("type".into(), json!("error"));
    if let Some(id) = request_id {
        frame.insert("request_id".into(), id.clone());
    }
    frame.insert("code".into(), json!(error.code));
    frame.insert("message".into(), json!(error.message));
    for (key, value) in &error.extra {
        frame.insert(key.clone(), value.clone());
    }
    encode(&frame)
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a Value>,
}

/// `{"type":"pong","request_id"}`.
pub fn pong(request_id: Option<&Value>) -> Utf8Bytes {
    encode(&Pong {
        kind: "pong",
        request_id,
    })
}

#[derive(Serialize)]
struct UnreadCount {
    #[serde(rename = "type")]
    kind: &'static str,
    count: u64,
}

/// `{"type":"unread_count","count":N}`.
pub fn unread_count(count: u64) -> Utf8Bytes {
    encode(&UnreadCount {
        kind: "unread_count",
        count,
    })
}

fn encode(value: &impl Serialize) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(value).expect("frames always serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_send_with_request_id() {
        let parsed = parse(
            r#"{"type":"send_notification","content":"到账","receiver_group":"finance","request_id":7}"#,
        );

        assert_eq!(parsed.request_id, Some(json!(7)));
        let Ok(Command::Send(send)) = parsed.command else {
            panic!("expected a send command");
        };
        assert_eq!(send.content, Some(json!("到账")));
        assert_eq!(send.receiver_group, Some(json!("finance")));
        assert_eq!(send.priority, None);
    }

    #[test]
    fn malformed_json_is_an_error() {
        let parsed = parse("{not json");

        assert_eq!(parsed.command.unwrap_err().code, "malformed_json");
    }

    #[test]
    fn non_object_is_an_error() {
        assert_eq!(parse("[1,2]").command.unwrap_err().code, "malformed_json");
    }

    #[test]
    fn unknown_type_keeps_request_id() {
        let parsed = parse(r#"{"type":"subscribe","request_id":"a"}"#);

        assert_eq!(parsed.request_id, Some(json!("a")));
        assert_eq!(parsed.command.unwrap_err().code, "unknown_type");
    }

    #[test]
    fn missing_type_names_the_field() {
        let error = parse(r#"{"content":"x"}"#).command.unwrap_err();

        assert_eq!(error.code, "invalid_field");
        assert_eq!(error.extra.get("field"), Some(&json!("type")));
    }

    #[test]
    fn confirm_requires_an_id() {
        let error = parse(r#"{"type":"confirm_notification"}"#)
            .command
            .unwrap_err();

        assert_eq!(error.extra.get("field"), Some(&json!("notification_id")));
    }

    #[test]
    fn error_frame_carries_code_and_extras() {
        let error = CommandError::invalid_field("content", "is required");

        let frame: Value = serde_json::from_str(&error_frame_text(&error)).unwrap();

        assert_eq!(frame["type"], "error");
        assert_eq!(frame["request_id"], 3);
        assert_eq!(frame["code"], "invalid_field");
        assert_eq!(frame["field"], "content");
        assert_eq!(frame["message"], "content: is required");
    }

    fn error_frame_text(command_error: &CommandError) -> String {
        error(Some(&json!(3)), command_error).to_string()
    }

    #[test]
    fn pong_echoes_request_id() {
        assert_eq!(pong(None).as_str(), r#"{"type":"pong"}"#);
        assert_eq!(
            pong(Some(&json!("r1"))).as_str(),
            r#"{"type":"pong","request_id":"r1"}"#
        );
    }
}
