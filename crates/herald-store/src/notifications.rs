//! Notifications, read marks and the per-group event log.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_core::event::{Envelope, EventKind};
use herald_core::store::{
    AuditEntry, Confirmed, Created, ListFilter, NewNotification, NotificationStore, Reader, Scope,
    StoreResult,
};
use herald_core::{GroupName, Notification, NotificationId, Status, Username};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use crate::SeaStore;
use crate::batch::{Write, Written};
use crate::convert;
use crate::entity::{group, group_event, notification, notification_read};
use crate::error::{StoreErrorExt, is_unique_violation, to_store_error};

#[async_trait]
impl NotificationStore for SeaStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.context("ping the database")
    }

    async fn create_notification(&self, new: NewNotification) -> StoreResult<Created> {
        // A keyed creation looks its key up under the group locks, so it commits alone.
        if new.idempotency.is_some() {
            return create_alone(&self.db, new).await;
        }
        match self.writes().submit(Write::Create(new)).await? {
            Written::Created(created) => Ok(created),
            Written::Confirmed(_) => unreachable!("a creation yields a creation"),
        }
    }

    async fn find_notification(
        &self,
        id: NotificationId,
        reader: &Username,
    ) -> StoreResult<Option<Notification>> {
        find_notification(&self.db, id, reader).await
    }

    async fn confirm_notification(
        &self,
        id: NotificationId,
        by: &Username,
        at: DateTime<Utc>,
    ) -> StoreResult<Confirmed> {
        let write = Write::Confirm {
            id,
            by: by.clone(),
            at,
        };
        match self.writes().submit(write).await? {
            Written::Confirmed(confirmed) => Ok(confirmed),
            Written::Created(_) => unreachable!("a confirmation yields a confirmation"),
        }
    }

    async fn list_notifications(
        &self,
        reader: &Reader,
        filter: &ListFilter,
    ) -> StoreResult<Vec<Notification>> {
        let Some(mut condition) = scope_condition(&reader.scope) else {
            return Ok(Vec::new());
        };
        if let Some(status) = filter.status {
            condition = condition.add(notification::Column::Status.eq(status.as_str()));
        }
        if let Some(group) = &filter.sender_group {
            condition = condition.add(notification::Column::SenderGroup.eq(group.as_str()));
        }
        if let Some(group) = &filter.receiver_group {
            condition = condition.add(notification::Column::ReceiverGroup.eq(group.as_str()));
        }
        if let Some(priority) = filter.priority {
            condition = condition.add(notification::Column::Priority.eq(priority.as_str()));
        }
        if let Some(after) = filter.created_after {
            condition = condition.add(notification::Column::CreatedAt.gt(after));
        }
        if let Some(before) = filter.created_before {
            condition = condition.add(notification::Column::CreatedAt.lt(before));
        }
        if filter.unread_only {
            condition = condition.add(unread_condition(&reader.username));
        }
        if let Some(before_id) = filter.before_id {
            condition = condition.add(notification::Column::Id.lt(before_id));
        }

        let rows = notification::Entity::find()
            .filter(condition)
            .order_by_desc(notification::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await
            .context("list notifications")?;

        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let read: HashSet<i64> = notification_read::Entity::find()
            .select_only()
            .column(notification_read::Column::NotificationId)
            .filter(notification_read::Column::Username.eq(reader.username.as_str()))
            .filter(notification_read::Column::NotificationId.is_in(ids))
            .into_tuple::<i64>()
            .all(&self.db)
            .await
            .context("load read marks")?
            .into_iter()
            .collect();

        rows.into_iter()
            .map(|row| {
                let is_read = row.sender == reader.username.as_str() || read.contains(&row.id);
                convert::notification(row, Some(is_read))
            })
            .collect()
    }

    async fn mark_read(
        &self,
        reader: &Reader,
        ids: Option<&[NotificationId]>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let Some(mut condition) = scope_condition(&reader.scope) else {
            return Ok(0);
        };
        condition = condition.add(unread_condition(&reader.username));
        if let Some(ids) = ids {
            condition = condition.add(notification::Column::Id.is_in(ids.iter().copied()));
        }

        // One INSERT ... SELECT, so that "mark all" is a single statement however many rows it
        // touches; ON CONFLICT covers a concurrent request marking the same rows.
        let select = Query::select()
            .column(notification::Column::Id)
            .expr(Expr::val(reader.username.as_str()))
            .expr(Expr::val(at))
            .from(notification::Entity)
            .cond_where(condition)
            .to_owned();
        let insert = Query::insert()
            .into_table(notification_read::Entity)
            .columns([
                notification_read::Column::NotificationId,
                notification_read::Column::Username,
                notification_read::Column::ReadAt,
            ])
            .select_from(select)
            .map_err(|e| {
                to_store_error(
                    sea_orm::DbErr::Custom(e.to_string()),
                    "build the mark-read query",
                )
            })?
            .on_conflict(
                OnConflict::columns([
                    notification_read::Column::NotificationId,
                    notification_read::Column::Username,
                ])
                .do_nothing()
                .to_owned(),
            )
            .to_owned();

        let result = self
            .db
            .execute(&insert)
            .await
            .context("mark notifications read")?;
        Ok(result.rows_affected())
    }

    async fn unread_count(&self, reader: &Reader) -> StoreResult<u64> {
        let Some(condition) = scope_condition(&reader.scope) else {
            return Ok(0);
        };
        notification::Entity::find()
            .filter(condition.add(unread_condition(&reader.username)))
            .count(&self.db)
            .await
            .context("count unread notifications")
    }

    async fn history(&self, id: NotificationId) -> StoreResult<Vec<AuditEntry>> {
        let Some(row) = notification::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .context("load a notification")?
        else {
            return Ok(Vec::new());
        };
        let reads = notification_read::Entity::find()
            .filter(notification_read::Column::NotificationId.eq(id))
            .order_by_asc(notification_read::Column::ReadAt)
            .order_by_asc(notification_read::Column::Username)
            .all(&self.db)
            .await
            .context("load read marks")?;

        let mut entries = vec![AuditEntry {
            action: "created".into(),
            user: convert::username(&row.sender)?,
            at: row.created_at,
        }];
        for read in reads {
            entries.push(AuditEntry {
                action: "read".into(),
                user: convert::username(&read.username)?,
                at: read.read_at,
            });
        }
        if let (Some(by), Some(at)) = (&row.confirmed_by, row.confirmed_at) {
            entries.push(AuditEntry {
                action: "confirmed".into(),
                user: convert::username(by)?,
                at,
            });
        }
        // Stable, so that equal times keep created, read, confirmed order.
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }

    async fn events_after(
        &self,
        group: &GroupName,
        after: u64,
        limit: u64,
    ) -> StoreResult<Vec<Envelope>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = group_event::Entity::find()
            .filter(group_event::Column::GroupName.eq(group.as_str()))
            .filter(group_event::Column::Seq.gt(after))
            .order_by_asc(group_event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
            .context("load group events")?;
        Ok(rows
            .into_iter()
            .map(|row| Envelope {
                group: group.clone(),
                seq: row.seq as u64,
                frame: row.frame.into_bytes().into(),
            })
            .collect())
    }
}

/// Creates a notification in a transaction of its own.
pub(crate) async fn create_alone(
    db: &DatabaseConnection,
    new: NewNotification,
) -> StoreResult<Created> {
    let txn = db.begin().await.context("begin creating a notification")?;

    // Taking the seqs first write-locks the audience groups (and, on SQLite, the database)
    // before the idempotency key is looked up, so concurrent creations with one key queue here.
    let audience = audience(&new.sender_group, &new.receiver_group);
    let seqs = next_seqs(&txn, &audience).await?;

    if let Some(key) = &new.idempotency
        && let Some(existing) = find_by_key(&txn, &new.sender, &key.key).await?
    {
        txn.rollback()
            .await
            .context("roll back a replayed creation")?;
        return replayed(existing, &key.fingerprint);
    }

    let inserted = match insert_notification(&txn, &new).await {
        Ok(model) => model,
        Err(e) if is_unique_violation(&e) && new.idempotency.is_some() => {
            // A concurrent request with the same key committed first.
            txn.rollback()
                .await
                .context("roll back a duplicate creation")?;
            let key = new.idempotency.expect("checked above");
            let existing = find_by_key(db, &new.sender, &key.key)
                .await?
                .ok_or_else(|| to_store_error(e, "reload a notification by idempotency key"))?;
            return replayed(existing, &key.fingerprint);
        }
        Err(e) => return Err(to_store_error(e, "insert a notification")),
    };

    let notification = convert::notification(inserted, Some(true))?;
    let events = write_events(&txn, EventKind::Created, &notification, &seqs).await?;

    txn.commit().await.context("commit a notification")?;
    Ok(Created::New {
        notification,
        events,
    })
}

/// Confirms a notification in a transaction of its own.
pub(crate) async fn confirm_alone(
    db: &DatabaseConnection,
    id: NotificationId,
    by: &Username,
    at: DateTime<Utc>,
) -> StoreResult<Confirmed> {
    let txn = db
        .begin()
        .await
        .context("begin confirming a notification")?;

    let Some(notification) = confirm_row(&txn, id, by, at).await? else {
        txn.rollback()
            .await
            .context("roll back a lost confirmation")?;
        return not_confirmed(db, id, by).await;
    };

    let seqs = next_seqs(
        &txn,
        &audience(&notification.sender_group, &notification.receiver_group),
    )
    .await?;
    let events = write_events(&txn, EventKind::Confirmed, &notification, &seqs).await?;

    txn.commit().await.context("commit a confirmation")?;
    Ok(Confirmed::Now {
        notification,
        events,
    })
}

/// Inserts a pending notification.
pub(crate) async fn insert_notification<C: ConnectionTrait>(
    db: &C,
    new: &NewNotification,
) -> Result<notification::Model, DbErr> {
    let row = notification::ActiveModel {
        content: Set(new.content.as_str().to_owned()),
        sender: Set(new.sender.to_string()),
        sender_group: Set(new.sender_group.to_string()),
        receiver_group: Set(new.receiver_group.to_string()),
        status: Set(Status::Pending.as_str().to_owned()),
        priority: Set(new.priority.as_str().to_owned()),
        confirmed_by: Set(None),
        confirmed_at: Set(None),
        created_at: Set(herald_core::notification::now_millis()),
        idempotency_key: Set(new.idempotency.as_ref().map(|k| k.key.clone())),
        idempotency_fingerprint: Set(new.idempotency.as_ref().map(|k| k.fingerprint.clone())),
        ..Default::default()
    };
    notification::Entity::insert(row)
        .exec_with_returning(db)
        .await
}

/// Moves a pending notification to confirmed, or returns `None` when it is not pending or missing.
/// The result leaves `read` unset, because the caller loaded the read state before confirming.
///
/// The conditional update is the whole decision: of concurrent confirmations, on any number of
/// instances, exactly one finds the row still pending.
pub(crate) async fn confirm_row(
    txn: &DatabaseTransaction,
    id: NotificationId,
    by: &Username,
    at: DateTime<Utc>,
) -> StoreResult<Option<Notification>> {
    let updated = notification::Entity::update_many()
        .col_expr(
            notification::Column::Status,
            Expr::value(Status::Confirmed.as_str()),
        )
        .col_expr(notification::Column::ConfirmedBy, Expr::value(by.as_str()))
        .col_expr(notification::Column::ConfirmedAt, Expr::value(at))
        .filter(notification::Column::Id.eq(id))
        .filter(notification::Column::Status.eq(Status::Pending.as_str()))
        .exec_with_returning(txn)
        .await
        .context("confirm a notification")?;

    let Some(row) = updated.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(convert::notification(row, None)?))
}

/// Reads the current state of a notification that a confirmation found not pending.
pub(crate) async fn not_confirmed(
    db: &DatabaseConnection,
    id: NotificationId,
    by: &Username,
) -> StoreResult<Confirmed> {
    Ok(match find_notification(db, id, by).await? {
        Some(current) => Confirmed::Already(current),
        None => Confirmed::NotFound,
    })
}

/// A notification row with whether one reader has a read mark on it.
#[derive(FromQueryResult)]
struct RowWithMark {
    #[sea_orm(nested)]
    row: notification::Model,
    marked_read: bool,
}

/// Loads a notification and its read state for `reader` in one query.
async fn find_notification(
    db: &DatabaseConnection,
    id: NotificationId,
    reader: &Username,
) -> StoreResult<Option<Notification>> {
    let mark = Query::select()
        .expr(Expr::val(1))
        .from(notification_read::Entity)
        .and_where(
            Expr::col((
                notification_read::Entity,
                notification_read::Column::NotificationId,
            ))
            .equals((notification::Entity, notification::Column::Id)),
        )
        .and_where(
            Expr::col((
                notification_read::Entity,
                notification_read::Column::Username,
            ))
            .eq(reader.as_str()),
        )
        .to_owned();
    let Some(found) = notification::Entity::find_by_id(id)
        .column_as(Expr::exists(mark), "marked_read")
        .into_model::<RowWithMark>()
        .one(db)
        .await
        .context("load a notification")?
    else {
        return Ok(None);
    };
    let read = found.marked_read || found.row.sender == reader.as_str();
    Ok(Some(convert::notification(found.row, Some(read))?))
}

/// The groups that receive a notification's events, sorted so that every writer locks them in
/// the same order and concurrent transactions cannot deadlock.
pub(crate) fn audience(sender: &GroupName, receiver: &GroupName) -> Vec<GroupName> {
    let mut groups = vec![sender.clone(), receiver.clone()];
    groups.sort();
    groups.dedup();
    groups
}

/// Increments each group's seq and returns the new values, in the order given.
async fn next_seqs(
    txn: &DatabaseTransaction,
    groups: &[GroupName],
) -> StoreResult<Vec<(GroupName, u64)>> {
    let mut seqs = Vec::with_capacity(groups.len());
    for name in groups {
        seqs.push((name.clone(), advance_seq(txn, name, 1).await?));
    }
    Ok(seqs)
}

/// Adds `count` to a group's seq and returns the new value. The row stays locked until commit.
pub(crate) async fn advance_seq(
    txn: &DatabaseTransaction,
    name: &GroupName,
    count: u64,
) -> StoreResult<u64> {
    let updated = group::Entity::update_many()
        .col_expr(
            group::Column::LastSeq,
            Expr::col(group::Column::LastSeq).add(count as i64),
        )
        .filter(group::Column::Name.eq(name.as_str()))
        .exec_with_returning(txn)
        .await
        .context("increment a group seq")?;
    let row = updated
        .into_iter()
        .next()
        .ok_or_else(|| herald_core::StoreError::Internal {
            context: "increment a group seq",
            source: format!("group {name} does not exist").into(),
        })?;
    Ok(row.last_seq as u64)
}

/// Encodes and stores one event per audience group, returning them for publishing.
async fn write_events(
    txn: &DatabaseTransaction,
    kind: EventKind,
    notification: &Notification,
    seqs: &[(GroupName, u64)],
) -> StoreResult<Vec<Envelope>> {
    let events: Vec<Envelope> = seqs
        .iter()
        .map(|(group, seq)| Envelope::encode(kind, group, *seq, notification))
        .collect();
    group_event::Entity::insert_many(event_rows(kind, notification.id, &events))
        .exec_without_returning(txn)
        .await
        .context("insert group events")?;
    Ok(events)
}

/// Builds the stored rows of a notification's events.
pub(crate) fn event_rows(
    kind: EventKind,
    notification: NotificationId,
    events: &[Envelope],
) -> impl Iterator<Item = group_event::ActiveModel> + '_ {
    let created_at = herald_core::notification::now_millis();
    events.iter().map(move |e| group_event::ActiveModel {
        group_name: Set(e.group.to_string()),
        seq: Set(e.seq as i64),
        kind: Set(kind.as_str().to_owned()),
        notification_id: Set(notification),
        frame: Set(e.frame_text().to_owned()),
        created_at: Set(created_at),
    })
}

async fn find_by_key<C: ConnectionTrait>(
    db: &C,
    sender: &Username,
    key: &str,
) -> StoreResult<Option<notification::Model>> {
    notification::Entity::find()
        .filter(notification::Column::Sender.eq(sender.as_str()))
        .filter(notification::Column::IdempotencyKey.eq(key))
        .one(db)
        .await
        .context("load a notification by idempotency key")
}

fn replayed(existing: notification::Model, fingerprint: &str) -> StoreResult<Created> {
    if existing.idempotency_fingerprint.as_deref() != Some(fingerprint) {
        return Ok(Created::KeyReused);
    }
    Ok(Created::Replayed(convert::notification(
        existing,
        Some(true),
    )?))
}

/// Rows the scope may see, or `None` when it may see nothing at all.
fn scope_condition(scope: &Scope) -> Option<Condition> {
    match scope {
        Scope::All => Some(Condition::all()),
        Scope::Groups(groups) if groups.is_empty() => None,
        Scope::Groups(groups) => {
            let names: Vec<&str> = groups.iter().map(GroupName::as_str).collect();
            Some(
                Condition::all().add(
                    Condition::any()
                        .add(notification::Column::SenderGroup.is_in(names.clone()))
                        .add(notification::Column::ReceiverGroup.is_in(names)),
                ),
            )
        }
    }
}

/// Unread for a user: not sent by them and without their read mark.
fn unread_condition(username: &Username) -> Condition {
    let marks = Query::select()
        .column(notification_read::Column::NotificationId)
        .from(notification_read::Entity)
        .and_where(notification_read::Column::Username.eq(username.as_str()))
        .to_owned();
    Condition::all()
        .add(notification::Column::Sender.ne(username.as_str()))
        .add(notification::Column::Id.not_in_subquery(marks))
}
