//! The bounded outbound queue of one socket.
//!
//! Group channels and command replies push frames; the socket's writer pops them. The queue is
//! bounded both in frames and in bytes. A push that would exceed either bound marks the queue
//! overflowed instead of waiting, so a slow reader never delays the channel that feeds every
//! other socket. The writer notices the mark, closes its socket with 4008 and drops the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use herald_core::GroupName;
use tokio::sync::{Notify, mpsc};

/// One text frame on its way to a socket.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The group and seq of a group event; `None` for replies and signals, which are not replayed.
    pub event: Option<(Arc<GroupName>, u64)>,
    /// The JSON text, shared with every other socket that receives the same event.
    pub text: Utf8Bytes,
}

/// The reason a push did not enqueue the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full; the socket is being closed as a slow consumer.
    Overflow,
    /// The socket is gone.
    Closed,
}

struct Shared {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    overflow: Notify,
}

/// The producing side; cheap to clone.
#[derive(Clone)]
pub struct OutboxSender {
    frames: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
}

/// The consuming side, owned by the socket's writer.
pub struct OutboxReceiver {
    frames: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
}

/// Creates a queue of at most `max_frames` frames and `max_bytes` bytes of text.
pub fn outbox(max_frames: usize, max_bytes: usize) -> (OutboxSender, OutboxReceiver) {
    let (sender, receiver) = mpsc::channel(max_frames.max(1));
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes: max_bytes.max(1),
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        OutboxSender {
            frames: sender,
            shared: shared.clone(),
        },
        OutboxReceiver {
            frames: receiver,
            shared,
        },
    )
}

impl OutboxSender {
    /// Enqueues a frame without waiting.
    pub fn push(&self, frame: Outbound) -> Result<(), PushError> {
        let shared = &self.shared;
        if shared.overflowed.load(Ordering::Acquire) {
            return Err(PushError::Overflow);
        }

        let len = frame.text.len();
        let queued = shared.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > shared.max_bytes {
            shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.mark_overflowed();
            return Err(PushError::Overflow);
        }

        match self.frames.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.mark_overflowed();
                Err(PushError::Overflow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                Err(PushError::Closed)
            }
        }
    }

    /// Reports whether the writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }

    fn mark_overflowed(&self) {
        if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
            self.shared.overflow.notify_one();
        }
    }
}

impl OutboxReceiver {
    /// Waits for the next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let frame = self.frames.recv().await?;
        self.release(&frame);
        Some(frame)
    }

    /// Takes the next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let frame = self.frames.try_recv().ok()?;
        self.release(&frame);
        Some(frame)
    }

    /// Returns a handle that waits for overflow while the receiver is borrowed elsewhere.
    pub fn overflow_watch(&self) -> OverflowWatch {
        OverflowWatch {
            shared: self.shared.clone(),
        }
    }

    /// Frames and bytes queued right now.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.frames.len(),
            self.shared.queued_bytes.load(Ordering::Acquire),
        )
    }

    /// Drops everything queued and refuses further pushes.
    pub fn close(&mut self) {
        self.frames.close();
        while let Ok(frame) = self.frames.try_recv() {
            self.release(&frame);
        }
    }

    fn release(&self, frame: &Outbound) {
        self.shared
            .queued_bytes
            .fetch_sub(frame.text.len(), Ordering::AcqRel);
    }
}

/// Watches one queue for overflow.
#[derive(Clone)]
pub struct OverflowWatch {
    shared: Arc<Shared>,
}

impl OverflowWatch {
    /// Reports whether a push has overflowed the queue.
    pub fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }

    /// Resolves when the queue overflows, immediately if it already has.
    pub async fn wait(&self) {
        let notified = self.shared.overflow.notified();
        if self.overflowed() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Outbound {
        Outbound {
            event: None,
            text: Utf8Bytes::from(text),
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order() {
        let (sender, mut receiver) = outbox(8, 1024);

        sender.push(frame("one")).unwrap();
        sender.push(frame("two")).unwrap();

        assert_eq!(receiver.recv().await.unwrap().text.as_str(), "one");
        assert_eq!(receiver.try_recv().unwrap().text.as_str(), "two");
        assert_eq!(receiver.queued(), (0, 0));
    }

    #[tokio::test]
    async fn frame_bound_overflows() {
        let (sender, receiver) = outbox(2, 1024);

        sender.push(frame("a")).unwrap();
        sender.push(frame("b")).unwrap();

        assert_eq!(sender.push(frame("c")), Err(PushError::Overflow));
        let watch = receiver.overflow_watch();
        assert!(watch.overflowed());
        watch.wait().await;
    }

    #[tokio::test]
    async fn byte_bound_overflows() {
        let (sender, receiver) = outbox(100, 10);

        sender.push(frame("123456")).unwrap();

        assert_eq!(sender.push(frame("123456")), Err(PushError::Overflow));
        assert!(receiver.overflow_watch().overflowed());
        assert_eq!(receiver.queued(), (1, 6));
    }

    #[tokio::test]
    async fn overflowed_queue_rejects_later_pushes() {
        let (sender, mut receiver) = outbox(1, 1024);
        sender.push(frame("a")).unwrap();
        sender.push(frame("b")).unwrap_err();

        receiver.recv().await.unwrap();

        assert_eq!(sender.push(frame("c")), Err(PushError::Overflow));
    }

    #[tokio::test]
    async fn closed_queue_reports_closed() {
        let (sender, mut receiver) = outbox(4, 1024);
        sender.push(frame("a")).unwrap();

        receiver.close();

        assert_eq!(receiver.queued(), (0, 0));
        assert_eq!(sender.push(frame("b")), Err(PushError::Closed));
        assert!(sender.is_closed());
    }
}
