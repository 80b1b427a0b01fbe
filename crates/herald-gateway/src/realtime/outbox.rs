//! The bounded outbound queue of one socket.
//!
//! Group channels and command replies push frames; the socket's writer pops them. The queue is
//! bounded both in frames and in bytes. A push that would exceed either bound marks the queue
//! overflowed instead of waiting, so a slow reader never delays the channel that feeds every
//! other socket. The writer notices the mark, closes its socket with 4008 and drops the queue.
//!
//! The queue is a `VecDeque` behind a mutex with one stored waker. A Tokio mpsc channel allocates
//! a block of 32 frames (48 bytes each) when it is created, so every idle socket would pay 1.5 KiB.
//! An empty `VecDeque` allocates nothing. A push or a pop takes one uncontended lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use herald_core::GroupName;
use tokio::sync::Notify;

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

/// The queued frames and the writer's waker, guarded together.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    bytes: usize,
    /// Set when the writer closes the queue; pushes fail from then on.
    closed: bool,
    senders: usize,
    /// The writer's waker while it waits for a frame.
    waker: Option<Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    overflowed: AtomicBool,
    overflow: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("outbox mutex poisoned")
    }
}

/// The producing side; cheap to clone.
pub struct OutboxSender {
    shared: Arc<Shared>,
}

/// The consuming side, owned by the socket's writer.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// Creates a queue of at most `max_frames` frames and `max_bytes` bytes of text.
pub fn outbox(max_frames: usize, max_bytes: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            senders: 1,
            ..Queue::default()
        }),
        max_frames: max_frames.max(1),
        max_bytes: max_bytes.max(1),
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        OutboxSender {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

impl OutboxSender {
    /// Enqueues a frame without waiting.
    pub fn push(&self, frame: Outbound) -> Result<(), PushError> {
        let shared = &self.shared;
        if shared.overflowed.load(Ordering::Acquire) {
            return Err(PushError::Overflow);
        }

        let mut queue = shared.lock();
        if queue.closed {
            return Err(PushError::Closed);
        }
        let bytes = queue.bytes + frame.text.len();
        if queue.frames.len() >= shared.max_frames || bytes > shared.max_bytes {
            drop(queue);
            self.mark_overflowed();
            return Err(PushError::Overflow);
        }
        queue.frames.push_back(frame);
        queue.bytes = bytes;
        let waker = queue.waker.take();
        drop(queue);

        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Reports whether the writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    fn mark_overflowed(&self) {
        if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
            self.shared.overflow.notify_one();
        }
    }
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.senders -= 1;
        let waker = if queue.senders == 0 {
            queue.waker.take()
        } else {
            None
        };
        drop(queue);

        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl OutboxReceiver {
    /// Waits for the next frame; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx| {
            let mut queue = self.shared.lock();
            if let Some(frame) = pop(&mut queue) {
                return Poll::Ready(Some(frame));
            }
            if queue.senders == 0 || queue.closed {
                return Poll::Ready(None);
            }
            match &mut queue.waker {
                Some(waker) => waker.clone_from(cx.waker()),
                None => queue.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Takes the next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        pop(&mut self.shared.lock())
    }

    /// Returns a handle that waits for overflow while the receiver is borrowed elsewhere.
    pub fn overflow_watch(&self) -> OverflowWatch {
        OverflowWatch {
            shared: self.shared.clone(),
        }
    }

    /// Frames and bytes queued right now.
    pub fn queued(&self) -> (usize, usize) {
        let queue = self.shared.lock();
        (queue.frames.len(), queue.bytes)
    }

    /// Drops everything queued and rejects further pushes.
    pub fn close(&mut self) {
        let mut queue = self.shared.lock();
        queue.closed = true;
        queue.bytes = 0;
        let frames = std::mem::take(&mut queue.frames);
        drop(queue);
        drop(frames);
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

fn pop(queue: &mut Queue) -> Option<Outbound> {
    let frame = queue.frames.pop_front()?;
    queue.bytes -= frame.text.len();
    Some(frame)
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

    #[test]
    fn outbound_frame_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Outbound>(), 48);
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

    #[tokio::test]
    async fn push_wakes_a_waiting_writer() {
        let (sender, mut receiver) = outbox(8, 1024);
        let writer = tokio::spawn(async move { receiver.recv().await.map(|f| f.text) });
        tokio::task::yield_now().await;

        sender.push(frame("late")).unwrap();

        assert_eq!(writer.await.unwrap().unwrap().as_str(), "late");
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone() {
        let (sender, mut receiver) = outbox(8, 1024);
        let other = sender.clone();
        sender.push(frame("last")).unwrap();
        drop(sender);

        let writer = tokio::spawn(async move {
            let first = receiver.recv().await.map(|f| f.text);
            let second = receiver.recv().await.map(|f| f.text);
            (first, second)
        });
        tokio::task::yield_now().await;
        drop(other);

        let (first, second) = writer.await.unwrap();
        assert_eq!(first.unwrap().as_str(), "last");
        assert!(second.is_none());
    }
}
