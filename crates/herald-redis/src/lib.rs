//! The Redis pub/sub adapter of Herald's [`Broker`] trait, for several gateway instances.
//!
//! Events travel on Redis pub/sub with one channel per group, `{prefix}group:{name}`, and user
//! signals on one channel, `{prefix}signals`. A payload is the event's seq in decimal, a colon and
//! the frame's JSON, so a subscriber forwards the frame without parsing it.
//!
//! Each instance subscribes per group, and only to groups that its sockets joined, rather than
//! by pattern. A pattern subscription would make every instance receive every group's traffic,
//! and Redis would match each publish against every pattern. Per-group channels keep both costs
//! proportional to what an instance serves.
//!
//! Pub/sub delivers at most once, so this adapter never claims more. When the subscriber
//! connection is lost, every group subscription receives [`Delivery::Gap`]. It receives another
//! once the connection is back and subscribed again, because events published in between are
//! gone. On each gap the gateway reads the missed events from storage by seq. Publishing uses a
//! small connection pool. A failed publish returns an error that the service logs, and subscribers
//! still find the event in storage on their reconcile timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures_util::stream::{self, StreamExt};
use herald_core::broker::signal_stream;
use herald_core::{
    Backoff, Broker, BrokerError, Delivery, Envelope, GroupName, SignalSubscription, Subscription,
    UserSignal,
};
use tokio::sync::{broadcast, mpsc, oneshot};

/// How long one publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `subscribe` waits for Redis to confirm a new channel. After that it returns anyway:
/// the subscriber task subscribes once Redis is reachable and then reports a gap.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Local buffer per group; a subscriber that falls further behind gets a gap.
const LOCAL_CAPACITY: usize = 4096;

/// Settings of the Redis broker.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[:password@]host:port/db` or `rediss://…`.
    pub url: String,
    /// Prefix of every channel name, so that several deployments can share one Redis.
    pub prefix: String,
}

/// A Redis URL that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct InvalidUrl(String);

struct Shared {
    prefix: String,
    groups: Mutex<HashMap<GroupName, broadcast::Sender<Delivery>>>,
    signals: broadcast::Sender<UserSignal>,
    connected: AtomicBool,
}

/// A subscription request from `subscribe` to the subscriber task.
struct SubscribeRequest {
    channel: String,
    done: oneshot::Sender<()>,
}

/// The Redis broker. Cheap to share behind an `Arc`.
pub struct RedisBroker {
    pool: Pool,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<SubscribeRequest>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl RedisBroker {
    /// Creates the broker and starts its subscriber task. Redis does not have to be reachable
    /// yet: the task connects with backoff, and publishing fails until it is.
    pub fn start(options: RedisOptions) -> Result<Self, InvalidUrl> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|error| InvalidUrl(error.to_string()))?;

        let mut config = Config::from_url(options.url.clone());
        let mut pool_config = PoolConfig::new(8);
        pool_config.timeouts = Timeouts {
            wait: Some(PUBLISH_TIMEOUT),
            create: Some(PUBLISH_TIMEOUT),
            recycle: Some(PUBLISH_TIMEOUT),
        };
        config.pool = Some(pool_config);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|error| InvalidUrl(error.to_string()))?;

        let shared = Arc::new(Shared {
            prefix: options.prefix,
            groups: Mutex::new(HashMap::new()),
            signals: broadcast::channel(LOCAL_CAPACITY).0,
            connected: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::unbounded_channel();
        let subscriber = tokio::spawn(run_subscriber(client, shared.clone(), receiver));
        Ok(Self {
            pool,
            shared,
            requests,
            subscriber,
        })
    }

    fn publish_bytes(&self, channel: String, payload: Vec<u8>) -> PublishFuture<'_> {
        Box::pin(async move {
            let publish = async {
                let mut connection = self
                    .pool
                    .get()
                    .await
                    .map_err(|error| BrokerError::Unavailable(error.to_string()))?;
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(payload)
                    .query_async::<i64>(&mut connection)
                    .await
                    .map_err(|error| BrokerError::Unavailable(error.to_string()))
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                Ok(result) => result.map(drop),
                Err(_) => Err(BrokerError::Unavailable(format!(
                    "PUBLISH to {channel} timed out after {PUBLISH_TIMEOUT:?}"
                ))),
            }
        })
    }
}

type PublishFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send + 'a>>;

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        let channel = group_channel(&self.shared.prefix, &envelope.group);
        self.publish_bytes(channel, encode_payload(envelope.seq, &envelope.frame))
            .await
    }

    async fn subscribe(&self, group: &GroupName) -> Result<Subscription, BrokerError> {
        let (receiver, new_channel) = {
            let mut groups = self.shared.groups.lock().expect("broker mutex poisoned");
            match groups.get(group) {
                Some(sender) => (sender.subscribe(), false),
                None => {
                    let sender = broadcast::channel(LOCAL_CAPACITY).0;
                    let receiver = sender.subscribe();
                    groups.insert(group.clone(), sender);
                    (receiver, true)
                }
            }
        };

        if new_channel {
            let (done, confirmed) = oneshot::channel();
            let request = SubscribeRequest {
                channel: group_channel(&self.shared.prefix, group),
                done,
            };
            if self.requests.send(request).is_ok() {
                let _ = tokio::time::timeout(SUBSCRIBE_WAIT, confirmed).await;
            }
        }

        let deliveries = stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(delivery) => Some((delivery, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Delivery::Gap, receiver)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(deliveries.boxed())
    }

    async fn signal_user(&self, signal: UserSignal) -> Result<(), BrokerError> {
        let payload = serde_json::to_vec(&signal).expect("a user signal always serializes");
        self.publish_bytes(signals_channel(&self.shared.prefix), payload)
            .await
    }

    async fn subscribe_signals(&self) -> Result<SignalSubscription, BrokerError> {
        Ok(signal_stream(self.shared.signals.subscribe()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }
}

/// Keeps one pub/sub connection subscribed to the signals channel and every requested group
/// channel, reconnecting with backoff, and forwards messages to the local subscribers.
async fn run_subscriber(
    client: redis::Client,
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<SubscribeRequest>,
) {
    let signals = signals_channel(&shared.prefix);
    let mut backoff = Backoff::default();
    let mut lost = false;

    loop {
        let connected = async {
            let pubsub = client.get_async_pubsub().await?;
            let (mut sink, stream) = pubsub.split();
            let mut channels = vec![signals.clone()];
            channels.extend(
                shared
                    .groups
                    .lock()
                    .expect("broker mutex poisoned")
                    .keys()
                    .map(|group| group_channel(&shared.prefix, group)),
            );
            sink.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        }
        .await;

        let (mut sink, mut stream) = match connected {
            Ok(parts) => parts,
            Err(error) => {
                let first_failure = backoff.failures() == 0;
                let delay = backoff.next_delay();
                if first_failure {
                    tracing::warn!(%error, retry_in = ?delay, "failed to connect to Redis pub/sub; retrying with backoff");
                }
                // Requests made meanwhile are covered by the subscription on reconnect.
                while let Ok(request) = requests.try_recv() {
                    let _ = request.done.send(());
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };

        shared.connected.store(true, Ordering::Release);
        if lost {
            metrics::counter!("herald_broker_reconnects_total").increment(1);
            tracing::info!(
                failed_attempts = backoff.failures(),
                "Redis pub/sub connection restored; reading missed events from storage"
            );
            // Anything published while the connection was down is gone from pub/sub.
            announce_gap(&shared);
        } else {
            tracing::info!("subscribed to Redis pub/sub");
        }
        backoff.reset();

        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    if let Err(error) = sink.subscribe(&request.channel).await {
                        tracing::warn!(channel = %request.channel, %error, "failed to subscribe to a Redis channel");
                        break;
                    }
                    let _ = request.done.send(());
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    dispatch(&shared, &signals, &message);
                }
            }
        }

        shared.connected.store(false, Ordering::Release);
        lost = true;
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        announce_gap(&shared);
    }
}

/// Routes one pub/sub message to the local subscribers of its group or to the signal listeners.
fn dispatch(shared: &Shared, signals: &str, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let payload = message.get_payload_bytes();

    if channel == signals {
        match serde_json::from_slice::<UserSignal>(payload) {
            Ok(signal) => {
                let _ = shared.signals.send(signal);
            }
            Err(error) => tracing::warn!(%error, "ignoring a malformed user signal from Redis"),
        }
        return;
    }

    let Some(group) = channel
        .strip_prefix(shared.prefix.as_str())
        .and_then(|rest| rest.strip_prefix("group:"))
        .and_then(|name| GroupName::parse(name).ok())
    else {
        tracing::warn!(channel, "ignoring a message on an unexpected Redis channel");
        return;
    };
    let sender = shared
        .groups
        .lock()
        .expect("broker mutex poisoned")
        .get(&group)
        .cloned();
    let Some(sender) = sender else { return };

    let delivery = match decode_payload(payload) {
        Some((seq, frame)) => Delivery::Event(Envelope {
            group: group.clone(),
            seq,
            frame,
        }),
        None => {
            tracing::warn!(%group, "malformed event payload from Redis; reading the group from storage instead");
            Delivery::Gap
        }
    };
    let _ = sender.send(delivery);
}

/// Tells every local group subscription that events may have been lost.
fn announce_gap(shared: &Shared) {
    let groups = shared.groups.lock().expect("broker mutex poisoned");
    for sender in groups.values() {
        let _ = sender.send(Delivery::Gap);
    }
}

fn group_channel(prefix: &str, group: &GroupName) -> String {
    format!("{prefix}group:{group}")
}

fn signals_channel(prefix: &str) -> String {
    format!("{prefix}signals")
}

/// `{seq}:{frame}`.
fn encode_payload(seq: u64, frame: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(frame.len() + 21);
    payload.extend_from_slice(seq.to_string().as_bytes());
    payload.push(b':');
    payload.extend_from_slice(frame);
    payload
}

fn decode_payload(payload: &[u8]) -> Option<(u64, Bytes)> {
    let colon = payload.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((seq, Bytes::copy_from_slice(&payload[colon + 1..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let payload = encode_payload(42, br#"{"type":"notification.created","seq":42}"#);

        let (seq, frame) = decode_payload(&payload).unwrap();

        assert_eq!(seq, 42);
        assert_eq!(&frame[..], br#"{"type":"notification.created","seq":42}"#);
    }

    #[test]
    fn payload_without_seq_is_rejected() {
        assert_eq!(decode_payload(b"{}"), None);
        assert_eq!(decode_payload(b"x:{}"), None);
    }

    #[test]
    fn channel_names_carry_the_prefix() {
        let group = GroupName::parse("finance").unwrap();

        assert_eq!(group_channel("prod:", &group), "prod:group:finance");
        assert_eq!(signals_channel("prod:"), "prod:signals");
    }
}
