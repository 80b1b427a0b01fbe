//! Herald's domain core: the rules of group notifications, with no I/O of its own.
//!
//! - [`names`]: validated group names and usernames.
//! - [`notification`]: the notification record, content, priority and status.
//! - [`policy`]: who may send where, see what and confirm what.
//! - [`event`]: per-group events and the frames that carry them.
//! - [`broker`]: the `Broker` trait for fan-out between instances, with the in-memory adapter.
//! - [`store`]: the storage traits the gateway calls.
//! - [`service`]: the notification service that REST and WebSocket commands share.
//!
//! Transport (HTTP, WebSocket, Redis) and persistence (sea-orm) live in other crates.

pub mod broker;
pub mod event;
pub mod names;
pub mod notification;
pub mod policy;
pub mod service;
pub mod store;

pub use broker::{
    Backoff, Broker, BrokerError, Delivery, MemoryBroker, SignalSubscription, Subscription,
    UserSignal, UserSignalKind,
};
pub use event::{Envelope, EventKind};
pub use names::{GroupName, NameError, Username};
pub use notification::{Content, Notification, NotificationId, Priority, Status};
pub use policy::{Caller, SendRule};
pub use service::{NotificationService, ServiceError};
pub use store::{Store, StoreError};
