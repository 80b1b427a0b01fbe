//! The hub: this instance's group channels, its open sockets, and shutdown.
//!
//! Each group that has had a local socket gets one channel with one pump task. The pump
//! subscribes to the group on the broker and hands every event, in seq order and exactly once, to
//! the outboxes of the local sockets that joined the group. Because the broker may lose events, the
//! pump keeps the seq of the last event it delivered (the channel's head) and reads from storage
//! whatever lies between the head and a newer event: after a gap in seqs, after a lagging or lost
//! subscription, and on a timer that compares the head with the group's seq in storage. The
//! timer also covers a writer that committed and then died before it could publish.
//!
//! A channel subscribes per group rather than by pattern, so an instance receives only the groups
//! its sockets need, and it keeps the subscription while the process runs: groups are few and
//! long-lived, and a channel without sockets costs one query per reconcile interval.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use axum::http::HeaderValue;
use futures_util::StreamExt;
use herald_core::{
    Backoff, Caller, Delivery, Envelope, GroupName, NotificationService, UserSignal,
    UserSignalKind, Username,
};
use tokio::sync::watch;

use super::outbox::{Outbound, OutboxSender, PushError};
use super::protocol;
use crate::metrics;

/// Events read from storage per query when a channel or a socket catches up.
pub const CATCH_UP_PAGE: u64 = 500;

/// How long a socket waits for its group channel to read the group's seq from storage.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of live delivery.
#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    /// Frames a socket may have queued before it is closed as a slow consumer.
    pub queue_frames: usize,
    /// Bytes of text a socket may have queued before it is closed as a slow consumer.
    pub queue_bytes: usize,
    /// How often the server pings each socket; a socket silent for two intervals is closed.
    pub ping_interval: Duration,
    /// How often each channel compares its head with storage and reads what it missed.
    pub reconcile_interval: Duration,
    /// How long a closing socket waits for the client's close reply.
    pub close_timeout: Duration,
    /// Browser origins allowed to open sockets besides the gateway's own.
    pub allowed_origins: Vec<HeaderValue>,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        Self {
            queue_frames: 1024,
            queue_bytes: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(2),
            close_timeout: Duration::from_secs(5),
            allowed_origins: Vec::new(),
        }
    }
}

/// Identifies one socket within this process.
pub type SocketId = u64;

/// A failure to join a group channel in time.
#[derive(Debug, thiserror::Error)]
#[error("group {group} is not ready: storage did not answer within {timeout:?}")]
pub struct JoinError {
    pub group: GroupName,
    pub timeout: Duration,
}

/// A socket's membership in its channels; dropping it leaves them.
pub struct Registration {
    hub: Arc<Hub>,
    socket: SocketId,
    username: Username,
    groups: Vec<GroupName>,
}

impl Registration {
    pub fn socket(&self) -> SocketId {
        self.socket
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.leave(self);
    }
}

struct UserSocket {
    caller: Caller,
    outbox: OutboxSender,
}

/// The live-delivery side of one gateway instance.
pub struct Hub {
    service: NotificationService,
    options: RealtimeOptions,
    channels: Mutex<HashMap<GroupName, Arc<GroupChannel>>>,
    users: Mutex<HashMap<Username, HashMap<SocketId, UserSocket>>>,
    /// Groups that storage confirmed to exist, so that sockets joining them skip the lookup.
    known_groups: Mutex<HashSet<GroupName>>,
    next_socket: AtomicU64,
    shutdown: watch::Sender<bool>,
    open_sockets: watch::Sender<usize>,
}

impl Hub {
    /// Creates the hub and starts listening for user signals.
    pub fn start(service: NotificationService, options: RealtimeOptions) -> Arc<Self> {
        let hub = Arc::new(Self {
            service,
            options,
            channels: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            known_groups: Mutex::new(HashSet::new()),
            next_socket: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
            open_sockets: watch::Sender::new(0),
        });
        tokio::spawn(listen_for_signals(Arc::downgrade(&hub)));
        hub
    }

    pub fn options(&self) -> &RealtimeOptions {
        &self.options
    }

    pub fn service(&self) -> &NotificationService {
        &self.service
    }

    /// Registers a socket in each of `groups` and returns each group's head: the seq of the last
    /// event handed to the outbox's predecessors. Every later event reaches `outbox`.
    pub async fn register(
        self: &Arc<Self>,
        caller: &Caller,
        groups: &[GroupName],
        outbox: &OutboxSender,
    ) -> Result<(Registration, Vec<u64>), JoinError> {
        let socket = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.open_sockets.send_modify(|open| *open += 1);
        ::metrics::gauge!(metrics::CONNECTIONS_OPEN).increment(1.0);
        let mut registration = Registration {
            hub: self.clone(),
            socket,
            username: caller.username.clone(),
            groups: Vec::with_capacity(groups.len()),
        };

        self.users
            .lock()
            .expect("hub mutex poisoned")
            .entry(caller.username.clone())
            .or_default()
            .insert(
                socket,
                UserSocket {
                    caller: caller.clone(),
                    outbox: outbox.clone(),
                },
            );

        let mut heads = Vec::with_capacity(groups.len());
        for group in groups {
            let channel = self.channel(group);
            let mut ready = channel.ready.subscribe();
            let waited = tokio::time::timeout(JOIN_TIMEOUT, ready.wait_for(|ready| *ready)).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(JoinError {
                    group: group.clone(),
                    timeout: JOIN_TIMEOUT,
                });
            }
            heads.push(channel.join(socket, outbox.clone()));
            registration.groups.push(group.clone());
        }
        Ok((registration, heads))
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.subscribe();
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    }

    /// Asks every socket to close with 1001 and every channel to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every socket has closed, at most `timeout`; returns how many remain open.
    pub async fn wait_closed(&self, timeout: Duration) -> usize {
        let mut open = self.open_sockets.subscribe();
        let _ = tokio::time::timeout(timeout, open.wait_for(|open| *open == 0)).await;
        *open.borrow()
    }

    /// Reports whether storage has confirmed, since the process started, that the group exists.
    pub fn is_known_group(&self, group: &GroupName) -> bool {
        self.known_groups
            .lock()
            .expect("hub mutex poisoned")
            .contains(group)
    }

    /// Records that storage has the group. Groups are never deleted, so the record stays true.
    pub fn remember_group(&self, group: &GroupName) {
        self.known_groups
            .lock()
            .expect("hub mutex poisoned")
            .insert(group.clone());
    }

    /// Sockets open right now.
    pub fn open_sockets(&self) -> usize {
        *self.open_sockets.borrow()
    }

    fn channel(&self, group: &GroupName) -> Arc<GroupChannel> {
        let mut channels = self.channels.lock().expect("hub mutex poisoned");
        if let Some(channel) = channels.get(group) {
            return channel.clone();
        }

        let channel = Arc::new(GroupChannel {
            group: Arc::new(group.clone()),
            state: Mutex::new(ChannelState::default()),
            ready: watch::Sender::new(false),
            sockets_open: ::metrics::gauge!(metrics::SOCKETS_OPEN, "group" => group.to_string()),
            broadcast_duration: ::metrics::histogram!(metrics::BROADCAST_DURATION),
            backfilled: ::metrics::counter!(metrics::EVENTS_BACKFILLED),
        });
        channels.insert(group.clone(), channel.clone());
        tokio::spawn(pump(
            channel.clone(),
            self.service.clone(),
            self.options.reconcile_interval,
            self.shutdown.subscribe(),
        ));
        channel
    }

    fn leave(&self, registration: &Registration) {
        for group in &registration.groups {
            let channel = self
                .channels
                .lock()
                .expect("hub mutex poisoned")
                .get(group)
                .cloned();
            if let Some(channel) = channel {
                channel.leave(registration.socket);
            }
        }

        let mut users = self.users.lock().expect("hub mutex poisoned");
        if let Some(sockets) = users.get_mut(&registration.username) {
            sockets.remove(&registration.socket);
            if sockets.is_empty() {
                users.remove(&registration.username);
            }
        }
        drop(users);

        self.open_sockets.send_modify(|open| *open -= 1);
        ::metrics::gauge!(metrics::CONNECTIONS_OPEN).decrement(1.0);
    }

    /// Sends each of the user's local sockets its new unread count, counted with that socket's
    /// own token scope.
    fn refresh_unread_count(&self, username: &Username) {
        let sockets: Vec<(Caller, OutboxSender)> =
            match self.users.lock().expect("hub mutex poisoned").get(username) {
                Some(sockets) => sockets
                    .values()
                    .map(|socket| (socket.caller.clone(), socket.outbox.clone()))
                    .collect(),
                None => return,
            };

        for (caller, outbox) in sockets {
            let service = self.service.clone();
            tokio::spawn(async move {
                match service.unread_count(&caller).await {
                    Ok(count) => {
                        let _ = outbox.push(Outbound {
                            event: None,
                            text: protocol::unread_count(count),
                        });
                    }
                    Err(error) => {
                        tracing::warn!(user = %caller.username, %error, "failed to count unread notifications for a socket")
                    }
                }
            });
        }
    }
}

#[derive(Default)]
struct ChannelState {
    /// Seq of the last event handed to the subscribers.
    head: u64,
    subscribers: HashMap<SocketId, OutboxSender>,
}

/// One group's fan-out to this instance's sockets.
struct GroupChannel {
    group: Arc<GroupName>,
    state: Mutex<ChannelState>,
    /// True once the pump has subscribed and read the group's seq from storage.
    ready: watch::Sender<bool>,
    sockets_open: ::metrics::Gauge,
    broadcast_duration: ::metrics::Histogram,
    backfilled: ::metrics::Counter,
}

impl GroupChannel {
    fn join(&self, socket: SocketId, outbox: OutboxSender) -> u64 {
        let mut state = self.state.lock().expect("channel mutex poisoned");
        state.subscribers.insert(socket, outbox);
        self.sockets_open.increment(1.0);
        state.head
    }

    fn leave(&self, socket: SocketId) {
        let mut state = self.state.lock().expect("channel mutex poisoned");
        if state.subscribers.remove(&socket).is_some() {
            self.sockets_open.decrement(1.0);
        }
    }

    fn head(&self) -> u64 {
        self.state.lock().expect("channel mutex poisoned").head
    }

    fn set_head(&self, head: u64) {
        self.state.lock().expect("channel mutex poisoned").head = head;
    }

    /// Hands the event at `head + 1` to every subscriber. Subscribers whose queue overflowed or
    /// closed are dropped; their sessions close them.
    fn deliver(&self, envelope: Envelope) {
        let text = match Utf8Bytes::try_from(envelope.frame) {
            Ok(text) => Some(text),
            Err(error) => {
                tracing::error!(group = %self.group, seq = envelope.seq, %error, "stored event frame is not UTF-8; skipping it");
                None
            }
        };

        let started = std::time::Instant::now();
        let mut state = self.state.lock().expect("channel mutex poisoned");
        state.head = envelope.seq;
        let Some(text) = text else { return };
        let before = state.subscribers.len();
        state.subscribers.retain(|_, outbox| {
            let frame = Outbound {
                event: Some((self.group.clone(), envelope.seq)),
                text: text.clone(),
            };
            match outbox.push(frame) {
                Ok(()) => true,
                Err(PushError::Overflow | PushError::Closed) => false,
            }
        });
        let dropped = before - state.subscribers.len();
        drop(state);
        if dropped > 0 {
            self.sockets_open.decrement(dropped as f64);
        }
        self.broadcast_duration
            .record(started.elapsed().as_secs_f64());
    }
}

/// Keeps one channel fed: subscribe, read the head, then deliver events in seq order, reading
/// storage to fill every gap. Runs until shutdown.
async fn pump(
    channel: Arc<GroupChannel>,
    service: NotificationService,
    reconcile_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = channel.group.clone();
    let mut backoff = Backoff::default();
    let mut catch_up_failing = false;

    loop {
        let subscribed = service.broker().subscribe(&group).await;
        let mut subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%group, %error, retry_in = ?delay, "failed to subscribe to group events");
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };

        // Everything committed before the subscription started is in storage. The first time,
        // storage defines the head. After a lost subscription, it has what the pump missed.
        let ready = *channel.ready.borrow();
        if ready {
            catch_up(&channel, &service, None, &mut catch_up_failing).await;
        } else {
            match service.store().find_group(&group).await {
                Ok(record) => {
                    channel.set_head(record.map(|r| r.seq).unwrap_or(0));
                    channel.ready.send_replace(true);
                    tracing::debug!(%group, head = channel.head(), "group channel ready");
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%group, %error, retry_in = ?delay, "failed to read the group's seq");
                    if sleep_or_shutdown(delay, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if backoff.reset() {
            tracing::info!(%group, "group subscription restored");
        }

        let mut reconcile = tokio::time::interval(reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;

        loop {
            tokio::select! {
                () = until_shutdown(&mut shutdown) => return,
                delivery = subscription.next() => match delivery {
                    Some(Delivery::Event(envelope)) => {
                        on_event(&channel, &service, envelope, &mut catch_up_failing).await;
                    }
                    Some(Delivery::Gap) => {
                        tracing::debug!(%group, head = channel.head(), "subscription lagged; reading missed events from storage");
                        catch_up(&channel, &service, None, &mut catch_up_failing).await;
                    }
                    None => {
                        tracing::warn!(%group, "group subscription ended; subscribing again");
                        break;
                    }
                },
                _ = reconcile.tick() => reconcile_with_storage(&channel, &service, &mut catch_up_failing).await,
            }
        }
    }
}

/// Delivers a live event, first reading from storage any events between the head and it.
async fn on_event(
    channel: &GroupChannel,
    service: &NotificationService,
    envelope: Envelope,
    failing: &mut bool,
) {
    let head = channel.head();
    if envelope.seq <= head {
        return;
    }
    if envelope.seq > head + 1 {
        catch_up(channel, service, Some(envelope.seq - 1), failing).await;
    }
    if envelope.seq == channel.head() + 1 {
        channel.deliver(envelope);
    }
    // Otherwise storage could not supply the events in between; the reconcile timer reads them,
    // this one included, once it can.
}

async fn reconcile_with_storage(
    channel: &GroupChannel,
    service: &NotificationService,
    failing: &mut bool,
) {
    match service.store().find_group(&channel.group).await {
        Ok(Some(record)) if record.seq > channel.head() => {
            tracing::debug!(group = %channel.group, head = channel.head(), stored = record.seq, "reconcile found undelivered events");
            catch_up(channel, service, Some(record.seq), failing).await;
        }
        Ok(_) => report_recovery(&channel.group, failing),
        Err(error) => report_failure(&channel.group, &error, failing),
    }
}

/// Reads events after the head from storage and delivers them, up to `until` or to the newest.
async fn catch_up(
    channel: &GroupChannel,
    service: &NotificationService,
    until: Option<u64>,
    failing: &mut bool,
) {
    loop {
        let head = channel.head();
        if until.is_some_and(|until| head >= until) {
            break;
        }
        let events = match service
            .store()
            .events_after(&channel.group, head, CATCH_UP_PAGE)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                report_failure(&channel.group, &error, failing);
                return;
            }
        };

        let page_len = events.len() as u64;
        for envelope in events {
            if envelope.seq != channel.head() + 1 {
                // Seqs in storage have no gaps; a hole means a writer's commit is not visible
                // yet. The reconcile timer tries again.
                tracing::debug!(group = %channel.group, head = channel.head(), seq = envelope.seq, "stored events are not contiguous yet");
                return;
            }
            channel.deliver(envelope);
            channel.backfilled.increment(1);
        }
        if page_len < CATCH_UP_PAGE {
            break;
        }
    }
    report_recovery(&channel.group, failing);
}

fn report_failure(group: &GroupName, error: &dyn std::fmt::Display, failing: &mut bool) {
    if !*failing {
        tracing::warn!(%group, %error, "failed to read group events from storage; retrying on the reconcile timer");
        *failing = true;
    }
}

fn report_recovery(group: &GroupName, failing: &mut bool) {
    if *failing {
        tracing::info!(%group, "reading group events from storage works again");
        *failing = false;
    }
}

/// Relays user signals from the broker to local sockets until the hub is dropped.
async fn listen_for_signals(hub: Weak<Hub>) {
    let mut backoff = Backoff::default();
    loop {
        let (broker, mut shutdown) = match hub.upgrade() {
            Some(hub) => (hub.service.broker().clone(), hub.shutdown.subscribe()),
            None => return,
        };
        let mut signals = match broker.subscribe_signals().await {
            Ok(signals) => signals,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "failed to subscribe to user signals");
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        if backoff.reset() {
            tracing::info!("user signal subscription restored");
        }

        loop {
            let signal: UserSignal = tokio::select! {
                () = until_shutdown(&mut shutdown) => return,
                signal = signals.next() => match signal {
                    Some(signal) => signal,
                    None => break,
                },
            };
            let Some(hub) = hub.upgrade() else { return };
            match signal.kind {
                UserSignalKind::ReadStateChanged => hub.refresh_unread_count(&signal.username),
            }
        }
        tracing::warn!("user signal subscription ended; subscribing again");
    }
}

/// Resolves once shutdown has begun; unlike `wait_for`, holds no borrow of the value.
async fn until_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Sleeps for `delay`; returns true when shutdown began first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        () = until_shutdown(shutdown) => true,
    }
}
