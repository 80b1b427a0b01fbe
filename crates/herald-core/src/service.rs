//! The notification service: the rules of sending, confirming and reading, shared by the REST
//! API and WebSocket commands so that both validate and authorize the same way.
//!
//! It writes through the [`Store`] and, after each commit, publishes the resulting events through
//! the [`Broker`]. A failed publish is logged and not returned to the caller: the change is
//! committed, its events are stored, and subscribers fill gaps from storage by seq.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::broker::{Broker, UserSignal, UserSignalKind};
use crate::event::Envelope;
use crate::names::GroupName;
use crate::notification::{Content, Notification, NotificationId, Priority, now_millis};
use crate::policy::{Caller, SendError, SendRule, choose_sender_group};
use crate::store::{
    AuditEntry, Confirmed, Created, IdempotencyKey, ListFilter, NewNotification, Reader, Scope,
    Store, StoreError,
};

/// Maximum number of ids in one batch request.
pub const MAX_BATCH_IDS: usize = 200;

/// Why a request was not carried out. Each variant maps to one HTTP status and problem code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field is missing or has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A field names a group that does not exist.
    #[error("{field}: unknown group {group:?}")]
    UnknownGroup { field: &'static str, group: String },
    /// Several of the caller's groups may send to the receiver.
    #[error("several of your groups may send to {receiver}; set sender_group to one of them")]
    SenderGroupRequired {
        receiver: GroupName,
        choices: Vec<GroupName>,
    },
    #[error("{0}")]
    Forbidden(String),
    /// The notification does not exist or the caller may not see it.
    #[error("notification not found")]
    NotFound,
    /// Another user confirmed the notification first.
    #[error("notification was already confirmed")]
    AlreadyConfirmed(Box<Notification>),
    /// The idempotency key was used before with a different request body.
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// A send request as it arrives, before validation.
#[derive(Debug, Clone, Default)]
pub struct SendInput {
    pub content: Option<String>,
    pub receiver_group: Option<String>,
    pub priority: Option<String>,
    pub sender_group: Option<String>,
}

/// The outcome of a send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub notification: Notification,
    /// False when an idempotent retry returned the original notification.
    pub created: bool,
}

/// One id's result in a batch confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchOutcome {
    /// Confirmed by the caller, now or by an earlier call.
    Confirmed,
    /// Confirmed by somebody else first.
    AlreadyConfirmed,
    /// Visible to the caller but not in a group that may confirm it.
    Forbidden,
    NotFound,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub id: NotificationId,
    pub result: BatchOutcome,
    /// The notification's current state, when the caller may see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// The service object; cheap to clone.
#[derive(Clone)]
pub struct NotificationService {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
}

impl NotificationService {
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>) -> Self {
        Self { store, broker }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Validates, authorizes and stores a new notification, then publishes its events.
    pub async fn send(
        &self,
        caller: &Caller,
        input: SendInput,
        idempotency: Option<IdempotencyKey>,
    ) -> ServiceResult<Sent> {
        let content = input.content.ok_or_else(|| required("content"))?;
        let content = Content::parse(content).map_err(|e| invalid("content", e))?;
        let receiver_raw = input
            .receiver_group
            .ok_or_else(|| required("receiver_group"))?;
        let rules = self.store.list_rules().await?;
        let receiver = self
            .existing_group("receiver_group", &receiver_raw, &rules)
            .await?;
        let priority = match input.priority {
            Some(raw) => raw
                .parse::<Priority>()
                .map_err(|e| invalid("priority", e))?,
            None => Priority::default(),
        };
        let requested_sender = match input.sender_group {
            Some(raw) => Some(self.existing_group("sender_group", &raw, &rules).await?),
            None => None,
        };

        let sender_group =
            choose_sender_group(caller, &rules, &receiver, requested_sender.as_ref()).map_err(
                |e| match e {
                    SendError::Ambiguous { receiver, choices } => {
                        ServiceError::SenderGroupRequired { receiver, choices }
                    }
                    other => ServiceError::Forbidden(other.to_string()),
                },
            )?;

        let new = NewNotification {
            content,
            sender: caller.username.clone(),
            sender_group,
            receiver_group: receiver,
            priority,
            idempotency,
        };
        match self.store.create_notification(new).await? {
            Created::New {
                notification,
                events,
            } => {
                tracing::info!(
                    notification_id = notification.id,
                    sender = %notification.sender,
                    sender_group = %notification.sender_group,
                    receiver_group = %notification.receiver_group,
                    "notification created"
                );
                self.publish(events).await;
                Ok(Sent {
                    notification,
                    created: true,
                })
            }
            Created::Replayed(notification) => Ok(Sent {
                notification,
                created: false,
            }),
            Created::KeyReused => Err(ServiceError::IdempotencyKeyReused),
        }
    }

    /// Loads a notification the caller may see.
    pub async fn get(&self, caller: &Caller, id: NotificationId) -> ServiceResult<Notification> {
        self.store
            .find_notification(id, &caller.username)
            .await?
            .filter(|n| caller.can_see(n))
            .ok_or(ServiceError::NotFound)
    }

    /// Confirms a notification for a member of its receiving group. The first confirmation wins;
    /// the same user confirming again gets the unchanged record back.
    pub async fn confirm(
        &self,
        caller: &Caller,
        id: NotificationId,
    ) -> ServiceResult<Notification> {
        let current = self.get(caller, id).await?;
        if !caller.can_confirm(&current) {
            return Err(ServiceError::Forbidden(format!(
                "only members of group {} may confirm this notification",
                current.receiver_group
            )));
        }
        if current.confirmed_by.is_some() {
            return settled(caller, current);
        }

        match self
            .store
            .confirm_notification(id, &caller.username, now_millis())
            .await?
        {
            Confirmed::Now {
                mut notification,
                events,
            } => {
                tracing::info!(notification_id = id, confirmed_by = %caller.username, "notification confirmed");
                self.publish(events).await;
                notification.read = current.read;
                Ok(notification)
            }
            Confirmed::Already(notification) => settled(caller, notification),
            Confirmed::NotFound => Err(ServiceError::NotFound),
        }
    }

    /// Applies [`Self::confirm`] to each id, once per distinct id, in the order given.
    pub async fn confirm_batch(
        &self,
        caller: &Caller,
        ids: &[NotificationId],
    ) -> ServiceResult<Vec<BatchItem>> {
        check_batch_size(ids)?;
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::with_capacity(ids.len());
        for &id in ids.iter().filter(|id| seen.insert(**id)) {
            let item = match self.confirm(caller, id).await {
                Ok(n) => BatchItem {
                    id,
                    result: BatchOutcome::Confirmed,
                    notification: Some(n),
                },
                Err(ServiceError::AlreadyConfirmed(n)) => BatchItem {
                    id,
                    result: BatchOutcome::AlreadyConfirmed,
                    notification: Some(*n),
                },
                Err(ServiceError::Forbidden(_)) => {
                    let visible = self.get(caller, id).await.ok();
                    BatchItem {
                        id,
                        result: BatchOutcome::Forbidden,
                        notification: visible,
                    }
                }
                Err(ServiceError::NotFound) => BatchItem {
                    id,
                    result: BatchOutcome::NotFound,
                    notification: None,
                },
                Err(other) => return Err(other),
            };
            items.push(item);
        }
        Ok(items)
    }

    pub async fn list(
        &self,
        caller: &Caller,
        filter: &ListFilter,
    ) -> ServiceResult<Vec<Notification>> {
        Ok(self
            .store
            .list_notifications(&reader(caller), filter)
            .await?)
    }

    /// Marks one visible notification read for the caller.
    pub async fn mark_read(&self, caller: &Caller, id: NotificationId) -> ServiceResult<u64> {
        self.get(caller, id).await?;
        let updated = self
            .store
            .mark_read(&reader(caller), Some(&[id]), now_millis())
            .await?;
        self.read_state_changed(caller, updated).await;
        Ok(updated)
    }

    /// Marks several notifications, or all visible ones for `None`, read for the caller.
    pub async fn mark_many_read(
        &self,
        caller: &Caller,
        ids: Option<&[NotificationId]>,
    ) -> ServiceResult<u64> {
        if let Some(ids) = ids {
            check_batch_size(ids)?;
        }
        let updated = self
            .store
            .mark_read(&reader(caller), ids, now_millis())
            .await?;
        self.read_state_changed(caller, updated).await;
        Ok(updated)
    }

    pub async fn unread_count(&self, caller: &Caller) -> ServiceResult<u64> {
        Ok(self.store.unread_count(&reader(caller)).await?)
    }

    pub async fn history(
        &self,
        caller: &Caller,
        id: NotificationId,
    ) -> ServiceResult<Vec<AuditEntry>> {
        self.get(caller, id).await?;
        Ok(self.store.history(id).await?)
    }

    /// Parses a group name from the request and checks that the group exists. A group named in
    /// a send rule exists, as rules reference groups by foreign key, so only others are looked up.
    async fn existing_group(
        &self,
        field: &'static str,
        raw: &str,
        rules: &[SendRule],
    ) -> ServiceResult<GroupName> {
        let unknown = || ServiceError::UnknownGroup {
            field,
            group: raw.to_owned(),
        };
        let name = GroupName::parse(raw).map_err(|_| unknown())?;
        if rules
            .iter()
            .any(|rule| rule.from == name || rule.to == name)
        {
            return Ok(name);
        }
        match self.store.find_group(&name).await? {
            Some(_) => Ok(name),
            None => Err(unknown()),
        }
    }

    /// Tells every instance that the caller's unread count changed, so that each of the caller's
    /// sockets gets the new count. Like events, a failed signal is logged and not returned.
    async fn read_state_changed(&self, caller: &Caller, updated: u64) {
        if updated == 0 {
            return;
        }
        let signal = UserSignal {
            username: caller.username.clone(),
            kind: UserSignalKind::ReadStateChanged,
        };
        if let Err(error) = self.broker.signal_user(signal).await {
            tracing::warn!(user = %caller.username, %error, "failed to signal a read state change");
        }
    }

    async fn publish(&self, events: Vec<Envelope>) {
        for envelope in events {
            let (group, seq) = (envelope.group.clone(), envelope.seq);
            if let Err(error) = self.broker.publish(envelope).await {
                // Stored already; subscribers recover it from storage by seq.
                tracing::warn!(%group, seq, %error, "failed to publish event");
            }
        }
    }
}

/// The read scope of a caller.
pub fn reader(caller: &Caller) -> Reader {
    let scope = if caller.admin {
        Scope::All
    } else {
        Scope::Groups(caller.groups.clone())
    };
    Reader {
        username: caller.username.clone(),
        scope,
    }
}

fn settled(caller: &Caller, notification: Notification) -> ServiceResult<Notification> {
    if notification.confirmed_by.as_ref() == Some(&caller.username) {
        Ok(notification)
    } else {
        Err(ServiceError::AlreadyConfirmed(Box::new(notification)))
    }
}

fn check_batch_size(ids: &[NotificationId]) -> ServiceResult<()> {
    if ids.is_empty() {
        return Err(ServiceError::Invalid {
            field: "ids",
            message: "must contain at least one id".into(),
        });
    }
    if ids.len() > MAX_BATCH_IDS {
        return Err(ServiceError::Invalid {
            field: "ids",
            message: format!(
                "must contain at most {MAX_BATCH_IDS} ids (got {})",
                ids.len()
            ),
        });
    }
    Ok(())
}

fn required(field: &'static str) -> ServiceError {
    ServiceError::Invalid {
        field,
        message: "is required".into(),
    }
}

fn invalid(field: &'static str, error: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid {
        field,
        message: error.to_string(),
    }
}

/// Parses an RFC 3339 timestamp with any offset into UTC.
pub fn parse_timestamp(field: &'static str, raw: &str) -> ServiceResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ServiceError::Invalid {
            field,
            message: format!(
                "{raw:?} is not an RFC 3339 timestamp such as 2024-01-01T12:00:00+08:00"
            ),
        })
}
