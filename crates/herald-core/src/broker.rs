//! The `Broker` trait: fan-out between gateway instances, and its in-memory adapter.
//!
//! A broker carries two kinds of traffic:
//! - group events, which storage has already committed and numbered; the broker is never their
//!   record. Delivery may be lossy (a lagging subscriber, a dropped connection), so a
//!   subscription says so with [`Delivery::Gap`] and the subscriber reads what it missed from
//!   storage by seq;
//! - user signals, such as "this user's read state changed", which tell every instance to refresh
//!   what it shows that user's sockets. They carry no state, so losing one only delays a badge
//!   until the next signal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use crate::event::Envelope;
use crate::names::{GroupName, Username};

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Event(Envelope),
    /// Events may have been dropped before this point; the subscriber should read the group's
    /// events after its last seen seq from storage.
    Gap,
}

/// A live stream of one group's events. It ends when the broker shuts down.
pub type Subscription = BoxStream<'static, Delivery>;

/// A signal about one user, for every instance that serves the user's sockets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserSignal {
    pub username: Username,
    pub kind: UserSignalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSignalKind {
    /// The user's read marks changed: recount their unread notifications.
    ReadStateChanged,
}

/// A live stream of user signals for every user.
pub type SignalSubscription = BoxStream<'static, UserSignal>;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Publish and subscribe per group.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends a committed event to every subscriber of its group, on every instance.
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError>;

    /// Starts receiving the events of `group` published from now on.
    async fn subscribe(&self, group: &GroupName) -> Result<Subscription, BrokerError>;

    /// Sends a user signal to every instance.
    async fn signal_user(&self, signal: UserSignal) -> Result<(), BrokerError>;

    /// Starts receiving user signals sent from now on, for all users.
    async fn subscribe_signals(&self) -> Result<SignalSubscription, BrokerError>;

    /// A short name for logs and readiness reports, such as `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Whether subscriptions are currently connected to the broker's server. While they are
    /// not, events still reach sockets through storage, only later.
    fn is_connected(&self) -> bool {
        true
    }
}

/// Fan-out inside one process, for a single gateway instance.
///
/// Each group has a `tokio::sync::broadcast` channel. A subscriber that falls more than
/// `capacity` events behind loses the oldest ones and receives [`Delivery::Gap`] instead.
pub struct MemoryBroker {
    capacity: usize,
    /// One channel per group that has ever been published to or subscribed; groups are few and
    /// long-lived, so entries are never removed.
    channels: Mutex<HashMap<GroupName, broadcast::Sender<Envelope>>>,
    signals: broadcast::Sender<UserSignal>,
}

impl MemoryBroker {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
            signals: broadcast::channel(capacity.max(1)).0,
        }
    }

    fn sender(&self, group: &GroupName) -> broadcast::Sender<Envelope> {
        let mut channels = self.channels.lock().expect("broker mutex poisoned");
        channels
            .entry(group.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        // A send error only means nobody subscribes to the group right now.
        let _ = self.sender(&envelope.group).send(envelope);
        Ok(())
    }

    async fn subscribe(&self, group: &GroupName) -> Result<Subscription, BrokerError> {
        let receiver = self.sender(group).subscribe();
        let deliveries = stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(envelope) => Some((Delivery::Event(envelope), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Delivery::Gap, receiver)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(deliveries.boxed())
    }

    async fn signal_user(&self, signal: UserSignal) -> Result<(), BrokerError> {
        let _ = self.signals.send(signal);
        Ok(())
    }

    async fn subscribe_signals(&self) -> Result<SignalSubscription, BrokerError> {
        Ok(signal_stream(self.signals.subscribe()))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Turns a local broadcast receiver of user signals into a subscription, for broker adapters.
pub fn signal_stream(receiver: broadcast::Receiver<UserSignal>) -> SignalSubscription {
    let signals = stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(signal) => return Some((signal, receiver)),
                // Signals carry no state: skipping lost ones only delays a refresh.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    signals.boxed()
}

/// Exponential backoff from 100 ms to 5 s between attempts to reach a broker or storage.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = Duration::from_millis(100) * 2u32.saturating_pow(self.failures.min(6));
        self.failures = self.failures.saturating_add(1);
        delay.min(Duration::from_secs(5))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Clears the failure count; returns whether there were failures.
    pub fn reset(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn envelope(group: &str, seq: u64) -> Envelope {
        Envelope {
            group: GroupName::parse(group).unwrap(),
            seq,
            frame: Bytes::from(format!("{seq}")),
        }
    }

    #[tokio::test]
    async fn subscribers_receive_their_group_only() {
        let broker = MemoryBroker::default();
        let mut finance = broker
            .subscribe(&GroupName::parse("finance").unwrap())
            .await
            .unwrap();

        broker.publish(envelope("operations", 1)).await.unwrap();
        broker.publish(envelope("finance", 1)).await.unwrap();

        assert_eq!(
            finance.next().await,
            Some(Delivery::Event(envelope("finance", 1)))
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut backoff = Backoff::default();

        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();

        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.failures(), 8);
        assert!(backoff.reset());
        assert!(!backoff.reset());
    }

    #[tokio::test]
    async fn signals_reach_every_subscriber() {
        let broker = MemoryBroker::default();
        let mut first = broker.subscribe_signals().await.unwrap();
        let mut second = broker.subscribe_signals().await.unwrap();
        let signal = UserSignal {
            username: Username::parse("fin").unwrap(),
            kind: UserSignalKind::ReadStateChanged,
        };

        broker.signal_user(signal.clone()).await.unwrap();

        assert_eq!(first.next().await, Some(signal.clone()));
        assert_eq!(second.next().await, Some(signal));
    }

    #[tokio::test]
    async fn lagging_subscriber_sees_a_gap() {
        let broker = MemoryBroker::new(2);
        let mut sub = broker
            .subscribe(&GroupName::parse("finance").unwrap())
            .await
            .unwrap();

        for seq in 1..=5 {
            broker.publish(envelope("finance", seq)).await.unwrap();
        }

        assert_eq!(sub.next().await, Some(Delivery::Gap));
        assert_eq!(
            sub.next().await,
            Some(Delivery::Event(envelope("finance", 4)))
        );
        assert_eq!(
            sub.next().await,
            Some(Delivery::Event(envelope("finance", 5)))
        );
    }
}
