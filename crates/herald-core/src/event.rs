//! Domain events and the frames that carry them to sockets.
//!
//! Each change to a notification produces one event per audience group (receiver and sender).
//! Storage numbers the events of a group 1, 2, 3, ... in commit order and keeps each frame, so a
//! client that reconnects with `since` gets the very same bytes replayed.

use bytes::Bytes;
use serde::Serialize;

use crate::names::GroupName;
use crate::notification::Notification;

/// What happened to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    #[serde(rename = "notification.created")]
    Created,
    #[serde(rename = "notification.confirmed")]
    Confirmed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "notification.created",
            EventKind::Confirmed => "notification.confirmed",
        }
    }
}

/// One event in one group's stream, encoded once as the JSON text frame every socket receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub group: GroupName,
    pub seq: u64,
    /// `{"type","group","seq","notification"}` as UTF-8 JSON, shared by every socket.
    pub frame: Bytes,
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: EventKind,
    group: &'a GroupName,
    seq: u64,
    notification: &'a Notification,
}

impl Envelope {
    /// Encodes the event for `group` at `seq`. The notification's per-user `read` flag is left out.
    pub fn encode(
        kind: EventKind,
        group: &GroupName,
        seq: u64,
        notification: &Notification,
    ) -> Self {
        let mut shared = notification.clone();
        shared.read = None;
        let frame = Frame {
            kind,
            group,
            seq,
            notification: &shared,
        };
        let json = serde_json::to_vec(&frame).expect("a notification always serializes");
        Self {
            group: group.clone(),
            seq,
            frame: Bytes::from(json),
        }
    }

    /// The frame as text, for a WebSocket text message.
    pub fn frame_text(&self) -> &str {
        std::str::from_utf8(&self.frame).expect("frames are encoded from JSON and are UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Username;
    use crate::notification::{Priority, Status};

    #[test]
    fn frame_has_type_group_seq_and_no_read_flag() {
        let n = Notification {
            id: 7,
            content: "付款 🎉".into(),
            sender: Username::parse("ops").unwrap(),
            sender_group: GroupName::parse("operations").unwrap(),
            receiver_group: GroupName::parse("finance").unwrap(),
            status: Status::Pending,
            priority: Priority::High,
            confirmed_by: None,
            confirmed_at: None,
            created_at: "2024-01-01T12:00:00Z".parse().unwrap(),
            read: Some(true),
        };
        let envelope = Envelope::encode(EventKind::Created, &n.receiver_group, 3, &n);
        let value: serde_json::Value = serde_json::from_slice(&envelope.frame).unwrap();
        assert_eq!(value["type"], "notification.created");
        assert_eq!(value["group"], "finance");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["notification"]["content"], "付款 🎉");
        assert!(value["notification"].get("read").is_none());
    }
}
