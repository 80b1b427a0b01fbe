//! One WebSocket session after the upgrade.
//!
//! Two tasks share the socket. The reader parses client frames and runs their commands in order,
//! each in a task of its own so that a command whose socket closes still completes and publishes.
//! The writer owns the sending half. It first replays the stored events that a `since` requested,
//! then writes the outbox, everything queued in one flush. It closes the socket when the outbox
//! overflows, the token expires, pings go unanswered, the client breaks a limit or the server
//! shuts down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_core::service::SendInput;
use herald_core::{Caller, GroupName, Notification, NotificationService, ServiceError};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::hub::{CATCH_UP_PAGE, Hub, Registration};
use super::outbox::{Outbound, OutboxReceiver, OutboxSender};
use super::protocol::{self, Command, CommandError, close};
use crate::error::ApiError;
use crate::metrics;

/// Frames and bytes written per flush at most, so that the transport's write buffer stays small
/// when a client reads slowly.
const MAX_BATCH: usize = 128;
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A group the socket streams, with where its stream starts.
#[derive(Debug, Clone)]
pub struct GroupStart {
    pub group: GroupName,
    /// The channel's head when the socket joined: later events arrive through the outbox.
    pub head: u64,
    /// The client's `since`: replay stored events after it.
    pub since: Option<u64>,
}

/// Everything a session needs, prepared before the upgrade.
pub struct SessionSetup {
    pub caller: Caller,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: i64,
    pub registration: Registration,
    pub outbox: OutboxReceiver,
    pub replies: OutboxSender,
    pub groups: Vec<GroupStart>,
    /// Error frames to send first, such as a `since` that could not be parsed.
    pub notices: Vec<Utf8Bytes>,
}

/// The outcome of the writer.
enum Ending {
    /// The server closes with this code and reason.
    Close(u16, &'static str),
    /// The client closed, or the connection broke.
    ClientGone,
}

/// A message from the reader to the writer.
enum Control {
    Close(u16, &'static str),
    Ended,
}

type Sink = SplitSink<WebSocket, Message>;

/// A future that the writer waits on for the whole session.
type Waiter<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Runs the session until the socket closes.
pub async fn run(socket: WebSocket, hub: Arc<Hub>, setup: SessionSetup) {
    let SessionSetup {
        caller,
        expires_at,
        registration,
        mut outbox,
        replies,
        groups,
        notices,
    } = setup;
    let socket_id = registration.socket();
    let span = tracing::info_span!("socket", id = socket_id, user = %caller.username);
    let _entered = span.enter();
    tracing::debug!(groups = groups.len(), "socket opened");
    drop(_entered);

    let (mut sink, stream) = socket.split();
    let (control_sender, mut control) = oneshot::channel();
    let last_seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let reader = tokio::spawn(read_loop(
        stream,
        hub.service().clone(),
        caller.clone(),
        replies,
        control_sender,
        last_seen.clone(),
        started,
    ));

    let mut writer = Writer {
        hub: &hub,
        sink: &mut sink,
        overflow_wait: {
            let overflow = outbox.overflow_watch();
            Box::pin(async move { overflow.wait().await })
        },
        shutdown_wait: Box::pin(hub.shutting_down()),
        outbox: &mut outbox,
        control: &mut control,
        delivered: HashMap::new(),
        last_seen: &last_seen,
        started,
        expiry: Box::pin(tokio::time::sleep_until(deadline(expires_at))),
        delivered_count: ::metrics::counter!(metrics::EVENTS_DELIVERED),
    };
    let ending = writer.run(groups, notices).await;
    drop(writer);
    outbox.close();
    let reason = match &ending {
        Ending::Close(code, _) => close_reason(*code),
        Ending::ClientGone => "client",
    };
    ::metrics::counter!(metrics::SOCKETS_CLOSED, "reason" => reason).increment(1);

    match ending {
        Ending::Close(code, reason) => {
            let _entered = span.enter();
            match code {
                close::GOING_AWAY => tracing::debug!(code, reason, "closing socket"),
                _ => tracing::info!(code, reason, "closing socket"),
            }
            drop(_entered);
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            // A slow client may need a moment to read what is ahead of the close frame. Then it
            // replies with a close frame of its own, which ends the reader.
            let mut reader = reader;
            let handshake = async {
                let _ = sink.send(frame).await;
                let _ = (&mut reader).await;
            };
            if tokio::time::timeout(hub.options().close_timeout, handshake)
                .await
                .is_err()
            {
                reader.abort();
            }
        }
        Ending::ClientGone => {
            // Sends the reply to the client's close frame, if there was one.
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            reader.abort();
        }
    }

    drop(registration);
    tracing::debug!(id = socket_id, user = %caller.username, "socket closed");
}

struct Writer<'a> {
    hub: &'a Hub,
    sink: &'a mut Sink,
    outbox: &'a mut OutboxReceiver,
    /// Resolves when the outbox overflows, and `shutdown_wait` when the server shuts down. Each
    /// is created once per socket: registering a fresh waiter on every frame would contend on
    /// the hub's shared shutdown signal across all sockets.
    overflow_wait: Waiter<'static>,
    shutdown_wait: Waiter<'a>,
    control: &'a mut oneshot::Receiver<Control>,
    /// Seq of the last event written per group; the outbox may repeat what a replay wrote.
    delivered: HashMap<GroupName, u64>,
    last_seen: &'a AtomicU64,
    started: Instant,
    /// Fires when the token expires. Created once: a timer per loop turn would cost a timer-wheel
    /// insertion for every frame.
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    delivered_count: ::metrics::Counter,
}

impl Writer<'_> {
    async fn run(&mut self, groups: Vec<GroupStart>, notices: Vec<Utf8Bytes>) -> Ending {
        let mut opening: Vec<Message> = notices.into_iter().map(Message::Text).collect();
        for start in &groups {
            let delivered = match self.resolve_start(start, &mut opening).await {
                Ok(delivered) => delivered,
                Err(ending) => return ending,
            };
            self.delivered.insert(start.group.clone(), delivered);
        }
        if let Err(ending) = self.write(std::mem::take(&mut opening)).await {
            return ending;
        }

        for start in &groups {
            if let Err(ending) = self.replay(start).await {
                return ending;
            }
        }

        self.live().await
    }

    /// Decides where a group's stream starts and queues an error frame for a since that is
    /// ahead of storage. Returns the seq the socket is taken to have seen.
    async fn resolve_start(
        &mut self,
        start: &GroupStart,
        opening: &mut Vec<Message>,
    ) -> Result<u64, Ending> {
        let Some(since) = start.since else {
            return Ok(start.head);
        };
        if since <= start.head {
            return Ok(since);
        }

        // The channel may simply not have delivered the newest events yet; only a since past
        // storage's newest seq means the client saw a different database.
        let stored = match self.hub.service().store().find_group(&start.group).await {
            Ok(record) => record.map(|r| r.seq).unwrap_or(0),
            Err(error) => {
                tracing::warn!(group = %start.group, %error, "failed to read the group's seq for a resume");
                return Err(Ending::Close(
                    close::TRY_AGAIN_LATER,
                    "storage unavailable; reconnect with since",
                ));
            }
        };
        if since <= stored {
            return Ok(since);
        }

        let mut error = CommandError::new(
            "resync_required",
            format!(
                "since={since} is ahead of group {}'s newest event {stored}; reload notifications over REST, then use the seq from GET /api/groups/",
                start.group
            ),
        );
        error
            .extra
            .insert("group".into(), Value::String(start.group.to_string()));
        error.extra.insert("seq".into(), Value::from(stored));
        opening.push(Message::Text(protocol::error(None, &error)));
        Ok(start.head)
    }

    /// Writes the stored events of one group after its since, up to the channel's head; newer
    /// events come through the outbox.
    async fn replay(&mut self, start: &GroupStart) -> Result<(), Ending> {
        let Some(since) = start.since else {
            return Ok(());
        };
        let mut after = since;
        while after < start.head {
            let page = self
                .hub
                .service()
                .store()
                .events_after(&start.group, after, CATCH_UP_PAGE)
                .await
                .map_err(|error| {
                    tracing::warn!(group = %start.group, after, %error, "failed to replay group events");
                    Ending::Close(
                        close::TRY_AGAIN_LATER,
                        "storage unavailable; reconnect with since",
                    )
                })?;
            let Some(last) = page.last().map(|envelope| envelope.seq) else {
                break;
            };

            let mut messages = Vec::with_capacity(page.len());
            for envelope in page {
                match Utf8Bytes::try_from(envelope.frame) {
                    Ok(text) => messages.push(Message::Text(text)),
                    Err(error) => {
                        tracing::error!(group = %start.group, seq = envelope.seq, %error, "stored event frame is not UTF-8; skipping it")
                    }
                }
            }
            let written = messages.len() as u64;
            self.write(messages).await?;
            self.delivered_count.increment(written);
            after = last;
            let delivered = self.delivered.entry(start.group.clone()).or_default();
            *delivered = (*delivered).max(last);
        }
        Ok(())
    }

    async fn live(&mut self) -> Ending {
        let ping_interval = self.hub.options().ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                biased;
                control = &mut *self.control => return match control {
                    Ok(Control::Close(code, reason)) => Ending::Close(code, reason),
                    Ok(Control::Ended) | Err(_) => Ending::ClientGone,
                },
                () = self.shutdown_wait.as_mut() => {
                    return Ending::Close(close::GOING_AWAY, "server shutting down; reconnect with since");
                }
                () = self.overflow_wait.as_mut() => return slow_consumer(self.outbox),
                () = self.expiry.as_mut() => {
                    return Ending::Close(close::TOKEN_EXPIRED, "access token expired; reconnect with a new token");
                }
                _ = ping.tick() => {
                    let silent = self.started.elapsed().as_millis() as u64
                        - self.last_seen.load(Ordering::Relaxed);
                    if silent > 2 * ping_interval.as_millis() as u64 {
                        return Ending::Close(close::PING_TIMEOUT, "no answer to pings; reconnect with since");
                    }
                    if let Err(ending) = self.write(vec![Message::Ping(Default::default())]).await {
                        return ending;
                    }
                }
                frame = self.outbox.recv() => {
                    let Some(frame) = frame else { return Ending::ClientGone };
                    let mut batch = Vec::with_capacity(16);
                    let mut bytes = frame.text.len();
                    self.push_frame(frame, &mut batch);
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        let Some(frame) = self.outbox.try_recv() else { break };
                        bytes += frame.text.len();
                        self.push_frame(frame, &mut batch);
                    }
                    if let Err(ending) = self.write(batch).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// Adds a frame to the batch unless it repeats an event already written.
    fn push_frame(&mut self, frame: Outbound, batch: &mut Vec<Message>) {
        if let Some((group, seq)) = &frame.event {
            // Every group of the socket has an entry from the start, so this never allocates.
            let delivered = match self.delivered.get_mut(&**group) {
                Some(delivered) => delivered,
                None => self.delivered.entry((**group).clone()).or_default(),
            };
            if *seq <= *delivered {
                return;
            }
            *delivered = *seq;
            self.delivered_count.increment(1);
        }
        batch.push(Message::Text(frame.text));
    }

    /// Writes the messages and flushes once, giving up when a reason to close comes first.
    async fn write(&mut self, messages: Vec<Message>) -> Result<(), Ending> {
        if messages.is_empty() {
            return Ok(());
        }
        let sink = &mut *self.sink;
        let send = async move {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };

        tokio::select! {
            result = send => result.map_err(|_| Ending::ClientGone),
            () = self.overflow_wait.as_mut() => Err(slow_consumer(self.outbox)),
            () = self.shutdown_wait.as_mut() => {
                Err(Ending::Close(close::GOING_AWAY, "server shutting down; reconnect with since"))
            }
            control = &mut *self.control => Err(match control {
                Ok(Control::Close(code, reason)) => Ending::Close(code, reason),
                Ok(Control::Ended) | Err(_) => Ending::ClientGone,
            }),
        }
    }
}

/// Returns the `reason` label of a server close code.
fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "shutdown",
        close::MESSAGE_TOO_BIG => "message_too_big",
        close::TRY_AGAIN_LATER => "storage_unavailable",
        close::TOKEN_EXPIRED => "token_expiry",
        close::PING_TIMEOUT => "ping_timeout",
        close::SLOW_CONSUMER => "slow_consumer",
        _ => "other",
    }
}

fn slow_consumer(outbox: &OutboxReceiver) -> Ending {
    let (frames, bytes) = outbox.queued();
    tracing::info!(
        queued_frames = frames,
        queued_bytes = bytes,
        "socket reads too slowly; dropping its queue"
    );
    Ending::Close(
        close::SLOW_CONSUMER,
        "outbound queue full; reconnect with since",
    )
}

/// Converts a token's expiry (`expires_at`, Unix seconds) into a Tokio instant.
fn deadline(expires_at: i64) -> Instant {
    let now = chrono::Utc::now().timestamp_millis();
    let remaining = (expires_at * 1000 - now).max(0) as u64;
    Instant::now() + Duration::from_millis(remaining)
}

/// Reads client frames until the client closes or breaks a limit.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    service: NotificationService,
    caller: Caller,
    replies: OutboxSender,
    control: oneshot::Sender<Control>,
    last_seen: Arc<AtomicU64>,
    started: Instant,
) {
    while let Some(message) = stream.next().await {
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                let error = CommandError::new(
                    "unsupported_frame",
                    "binary frames are not supported; send JSON text frames",
                );
                reply(&replies, protocol::error(None, &error));
                continue;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(error) => {
                if is_too_big(&error) {
                    let _ = control.send(Control::Close(
                        close::MESSAGE_TOO_BIG,
                        "frame larger than 64 KiB",
                    ));
                    return;
                }
                tracing::debug!(%error, "socket read failed");
                break;
            }
        };

        if text.len() > protocol::MAX_CLIENT_FRAME_BYTES {
            let _ = control.send(Control::Close(
                close::MESSAGE_TOO_BIG,
                "frame larger than 64 KiB",
            ));
            return;
        }

        let parsed = protocol::parse(text.as_str());
        let request_id = parsed.request_id;
        let frame = match parsed.command {
            Err(error) => protocol::error(request_id.as_ref(), &error),
            Ok(Command::Ping) => protocol::pong(request_id.as_ref()),
            Ok(command) => {
                // A task of its own: the command completes and publishes even if this socket is
                // torn down meanwhile.
                let task = tokio::spawn(execute(service.clone(), caller.clone(), command));
                match task.await {
                    Ok(Ok(notification)) => protocol::ack(request_id.as_ref(), &notification),
                    Ok(Err(error)) => protocol::error(request_id.as_ref(), &error),
                    Err(join_error) => {
                        tracing::error!(error = %join_error, "socket command panicked");
                        let error = CommandError::new("internal", "internal error");
                        protocol::error(request_id.as_ref(), &error)
                    }
                }
            }
        };
        reply(&replies, frame);
    }
    let _ = control.send(Control::Ended);
}

fn reply(replies: &OutboxSender, text: Utf8Bytes) {
    // An overflowed queue closes the socket; the reply goes with it.
    let _ = replies.push(Outbound { event: None, text });
}

/// Runs a send or confirm command through the same service as the REST API.
async fn execute(
    service: NotificationService,
    caller: Caller,
    command: Command,
) -> Result<Notification, CommandError> {
    let result = match command {
        Command::Send(send) => {
            let input = SendInput {
                content: protocol::string_field("content", send.content)?,
                receiver_group: protocol::string_field("receiver_group", send.receiver_group)?,
                priority: protocol::string_field("priority", send.priority)?,
                sender_group: protocol::string_field("sender_group", send.sender_group)?,
            };
            service
                .send(&caller, input, None)
                .await
                .map(|sent| sent.notification)
        }
        Command::Confirm { notification_id } => {
            let id = notification_id_field(&notification_id)?;
            service.confirm(&caller, id).await
        }
        Command::Ping => unreachable!("ping is answered by the reader"),
    };
    result.map_err(command_error)
}

/// Reads `notification_id` as a number or a string of digits; ids outside the i64 range match
/// no notification, as in the REST API.
fn notification_id_field(value: &Value) -> Result<i64, CommandError> {
    let not_found = || CommandError::from(ApiError::NotFound("notification not found".into()));
    match value {
        Value::Number(number) if number.is_i64() => Ok(number.as_i64().expect("checked")),
        Value::Number(number) if number.is_u64() => Err(not_found()),
        Value::String(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse().map_err(|_| not_found())
        }
        _ => Err(CommandError::invalid_field(
            "notification_id",
            "must be an integer id such as 42",
        )),
    }
}

fn command_error(error: ServiceError) -> CommandError {
    let error = ApiError::from(error);
    match &error {
        ApiError::Internal(cause) => {
            tracing::error!(error = %cause, cause = ?cause, "socket command failed")
        }
        ApiError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "socket command failed: database unavailable")
        }
        _ => {}
    }
    CommandError::from(error)
}

/// Reports whether a read failed because the client's message exceeded the transport limit.
fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notification_id_accepts_numbers_and_digit_strings() {
        assert_eq!(notification_id_field(&json!(42)).unwrap(), 42);
        assert_eq!(notification_id_field(&json!("42")).unwrap(), 42);
    }

    #[test]
    fn notification_id_out_of_range_is_not_found() {
        assert_eq!(
            notification_id_field(&json!(u64::MAX)).unwrap_err().code,
            "not_found"
        );
        assert_eq!(
            notification_id_field(&json!("99999999999999999999"))
                .unwrap_err()
                .code,
            "not_found"
        );
    }

    #[test]
    fn notification_id_of_another_type_names_the_field() {
        for value in [json!(1.5), json!("abc"), json!(null), json!([1])] {
            let error = notification_id_field(&value).unwrap_err();
            assert_eq!(error.code, "invalid_field", "{value}");
            assert_eq!(error.extra.get("field"), Some(&json!("notification_id")));
        }
    }
}
