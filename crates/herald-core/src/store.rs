//! The storage traits the gateway calls, and the records they exchange.
//!
//! `herald-store` implements them over sea-orm. Every method that changes a notification also
//! writes its events, numbered per group, in the same transaction, and returns them so the caller
//! can publish them after the commit.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::event::Envelope;
use crate::names::{GroupName, Username};
use crate::notification::{Content, Notification, NotificationId, Priority, Status};
use crate::policy::SendRule;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A storage failure. Neither variant is the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; retrying later may succeed.
    #[error("database unavailable while trying to {context}")]
    Unavailable {
        context: &'static str,
        source: BoxError,
    },
    /// Anything else: a bug or a broken database.
    #[error("database error while trying to {context}")]
    Internal {
        context: &'static str,
        source: BoxError,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored user, for login and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: Username,
    /// PHC-format password hash (argon2id).
    pub password_hash: String,
    pub groups: BTreeSet<GroupName>,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
}

/// A stored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub name: GroupName,
    pub display_name: String,
    /// Seq of the group's newest event; 0 before the first.
    pub seq: u64,
}

/// What a client asked to send, after validation and policy checks.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub content: Content,
    pub sender: Username,
    pub sender_group: GroupName,
    pub receiver_group: GroupName,
    pub priority: Priority,
    pub idempotency: Option<IdempotencyKey>,
}

/// A client-chosen key that makes a retried creation return the original notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// Digest of the request body, to tell a retry from a different request reusing the key.
    pub fingerprint: String,
}

/// The result of a creation.
#[derive(Debug, Clone)]
pub enum Created {
    New {
        notification: Notification,
        events: Vec<Envelope>,
    },
    /// The same user already created a notification with this idempotency key and body.
    Replayed(Notification),
    /// The key was used before for a different request body.
    KeyReused,
}

/// The result of a conditional confirmation.
#[derive(Debug, Clone)]
pub enum Confirmed {
    /// This call moved the notification from pending to confirmed. Its `read` is unset:
    /// confirming leaves read marks alone, so the caller keeps the state it loaded before.
    Now {
        notification: Notification,
        events: Vec<Envelope>,
    },
    /// Somebody (possibly the same user) confirmed it before.
    Already(Notification),
    NotFound,
}

/// Which notifications a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every notification (administrators).
    All,
    /// Notifications whose sender or receiver group is one of these.
    Groups(BTreeSet<GroupName>),
}

/// The reader a query runs for: whose read flags to fill in and what they may see.
#[derive(Debug, Clone)]
pub struct Reader {
    pub username: Username,
    pub scope: Scope,
}

/// Filters for listing notifications, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub sender_group: Option<GroupName>,
    pub receiver_group: Option<GroupName>,
    pub priority: Option<Priority>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub unread_only: bool,
    /// Keyset cursor: only notifications with a smaller id.
    pub before_id: Option<NotificationId>,
    pub limit: u64,
}

/// One entry of a notification's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// `created`, `read` or `confirmed`.
    pub action: String,
    #[schema(value_type = String)]
    pub user: Username,
    pub at: DateTime<Utc>,
}

/// Users, groups and send rules: what the CLI administers and login reads.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    async fn find_user(&self, username: &Username) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Creates a user; returns false when the username is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<bool>;
    /// Replaces a user's groups; returns false when the user does not exist.
    async fn set_user_groups(
        &self,
        username: &Username,
        groups: &BTreeSet<GroupName>,
    ) -> StoreResult<bool>;
    /// Replaces a user's password hash; returns false when the user does not exist.
    async fn set_password_hash(&self, username: &Username, hash: &str) -> StoreResult<bool>;
    /// Removes a user (their notifications and read marks stay for the audit trail); returns
    /// false when the user does not exist.
    async fn remove_user(&self, username: &Username) -> StoreResult<bool>;

    async fn find_group(&self, name: &GroupName) -> StoreResult<Option<GroupRecord>>;
    async fn list_groups(&self) -> StoreResult<Vec<GroupRecord>>;
    /// Creates a group; returns false when the name is taken.
    async fn create_group(&self, name: &GroupName, display_name: &str) -> StoreResult<bool>;

    async fn list_rules(&self) -> StoreResult<Vec<SendRule>>;
    /// Adds a rule; returns false when it already exists.
    async fn add_rule(&self, rule: &SendRule) -> StoreResult<bool>;
    /// Removes a rule; returns false when it did not exist.
    async fn remove_rule(&self, rule: &SendRule) -> StoreResult<bool>;
}

/// Notifications, read marks and the per-group event log.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts a notification and its events in one transaction.
    async fn create_notification(&self, new: NewNotification) -> StoreResult<Created>;

    /// Loads a notification with `reader`'s read flag, without checking visibility.
    async fn find_notification(
        &self,
        id: NotificationId,
        reader: &Username,
    ) -> StoreResult<Option<Notification>>;

    /// Confirms a pending notification with one conditional update, and writes its events in the
    /// same transaction. Callers check permissions first.
    async fn confirm_notification(
        &self,
        id: NotificationId,
        by: &Username,
        at: DateTime<Utc>,
    ) -> StoreResult<Confirmed>;

    async fn list_notifications(
        &self,
        reader: &Reader,
        filter: &ListFilter,
    ) -> StoreResult<Vec<Notification>>;

    /// Marks the given notifications (or every visible one, for `None`) read for the reader,
    /// skipping those it may not see or has read; returns how many changed.
    async fn mark_read(
        &self,
        reader: &Reader,
        ids: Option<&[NotificationId]>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Counts visible notifications the reader has not read, leaving out those the reader sent.
    async fn unread_count(&self, reader: &Reader) -> StoreResult<u64>;

    /// The audit trail of one notification in time order.
    async fn history(&self, id: NotificationId) -> StoreResult<Vec<AuditEntry>>;

    /// Events of `group` with seq greater than `after`, in seq order, at most `limit`.
    async fn events_after(
        &self,
        group: &GroupName,
        after: u64,
        limit: u64,
    ) -> StoreResult<Vec<Envelope>>;
}

/// Everything the gateway needs from storage.
pub trait Store: DirectoryStore + NotificationStore {}

impl<T: DirectoryStore + NotificationStore> Store for T {}
