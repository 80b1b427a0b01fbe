//! Group commit for notification writes.
//!
//! A group's seq row stays locked from the increment until the commit, so writes that share a
//! group run one transaction at a time, and each of them pays for its statements and its commit
//! while the others wait. The write queue lets them share instead: a writer task takes every
//! creation and confirmation waiting in the queue and commits them in one transaction, in three
//! steps:
//!
//! 1. the notification rows: inserts for creations, conditional updates for confirmations, in id
//!    order so that two transactions confirming the same notifications cannot deadlock;
//! 2. the seqs: one increment per group by the number of its new events, in name order, so the
//!    group rows are locked only for the last two steps;
//! 3. the events, in one insert, and the commit.
//!
//! Every writer locks notification rows before group rows, each in ascending order, so several
//! writers (on PostgreSQL) cannot deadlock one another or the single-write paths.
//!
//! A group's events still commit in seq order, as the rows stay locked until the commit. When
//! the shared transaction fails for a reason other than an unreachable database, every write in
//! it runs again alone, so that one bad write cannot fail the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_core::event::{Envelope, EventKind};
use herald_core::store::{Confirmed, Created, NewNotification, StoreResult};
use herald_core::{GroupName, Notification, NotificationId, StoreError, Username};
use sea_orm::{DatabaseConnection, DbBackend, EntityTrait, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::convert;
use crate::entity::group_event;
use crate::error::{StoreErrorExt, to_store_error};
use crate::notifications::{
    advance_seq, audience, confirm_alone, confirm_row, create_alone, event_rows,
    insert_notification, not_confirmed,
};

/// Writes committed in one transaction at most. Each write stores at most two events of six
/// columns, so the event insert binds at most 768 parameters, below SQLite's older limit of 999.
const MAX_BATCH: usize = 64;

/// Writes per shared transaction (histogram).
pub const WRITE_BATCH_SIZE: &str = "herald_store_write_batch_size";

/// Shared transactions that failed and whose writes ran again alone (counter).
pub const WRITE_BATCH_RETRIES: &str = "herald_store_write_batch_retries_total";

/// Writes waiting for the writer tasks before submitters wait for room.
const QUEUE: usize = 1024;

/// Writer tasks on PostgreSQL. While one holds the group locks for its events and commit,
/// another writes the rows of the next batch. SQLite has a single writer, so it gets one task.
const POSTGRES_WRITERS: usize = 4;

/// A change to a notification.
pub(crate) enum Write {
    /// A creation without an idempotency key; keyed creations commit alone.
    Create(NewNotification),
    Confirm {
        id: NotificationId,
        by: Username,
        at: DateTime<Utc>,
    },
}

/// The outcome of a [`Write`].
pub(crate) enum Written {
    Created(Created),
    Confirmed(Confirmed),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<StoreResult<Written>>,
}

/// The submitting side of a store's write queue; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct WriteQueue {
    jobs: mpsc::Sender<Job>,
}

impl WriteQueue {
    /// Starts the writer tasks on the current Tokio runtime.
    pub(crate) fn start(db: DatabaseConnection) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_WRITERS,
            _ => 1,
        };
        for _ in 0..writers {
            tokio::spawn(commit_loop(db.clone(), receiver.clone()));
        }
        Self { jobs }
    }

    /// Queues a write and waits for its transaction to commit or fail.
    pub(crate) async fn submit(&self, write: Write) -> StoreResult<Written> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Internal {
        context: "queue a notification write",
        source: "the store's writer task stopped before replying".into(),
    }
}

/// Commits whatever is queued, one transaction at a time, until every submitter is gone.
async fn commit_loop(db: DatabaseConnection, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = jobs.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if received == 0 {
            return;
        }

        // A task of its own, so that a panic fails this batch's writes and not the writer.
        let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let committed = tokio::spawn(commit_batch(db.clone(), jobs)).await;
        if let Err(error) = committed {
            tracing::error!(%error, writes = received, "write batch panicked; its writes failed");
        }
    }
}

/// Commits one batch and sends each write its result.
async fn commit_batch(db: DatabaseConnection, jobs: Vec<Job>) {
    let (writes, replies): (Vec<Write>, Vec<_>) =
        jobs.into_iter().map(|job| (job.write, job.reply)).unzip();

    metrics::histogram!(WRITE_BATCH_SIZE).record(writes.len() as f64);

    match commit_together(&db, &writes).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let result = match outcome {
                    Outcome::Written(written) => Ok(written),
                    Outcome::NotPending { id, by } => {
                        not_confirmed(&db, id, &by).await.map(Written::Confirmed)
                    }
                };
                let _ = reply.send(result);
            }
        }
        Err(error) if writes.len() == 1 || matches!(error, StoreError::Unavailable { .. }) => {
            for reply in replies {
                let _ = reply.send(Err(copy_error(&error)));
            }
        }
        Err(error) => {
            tracing::debug!(%error, writes = writes.len(), "shared write transaction failed; committing each write alone");
            metrics::counter!(WRITE_BATCH_RETRIES).increment(1);
            for (write, reply) in writes.into_iter().zip(replies) {
                let _ = reply.send(commit_alone(&db, write).await);
            }
        }
    }
}

/// Copies an error for one write of a failed batch. The copy keeps the source's message only.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable { context, source } => StoreError::Unavailable {
            context,
            source: source.to_string().into(),
        },
        StoreError::Internal { context, source } => StoreError::Internal {
            context,
            source: source.to_string().into(),
        },
    }
}

async fn commit_alone(db: &DatabaseConnection, write: Write) -> StoreResult<Written> {
    match write {
        Write::Create(new) => create_alone(db, new).await.map(Written::Created),
        Write::Confirm { id, by, at } => {
            confirm_alone(db, id, &by, at).await.map(Written::Confirmed)
        }
    }
}

/// The result of one write in a committed shared transaction.
enum Outcome {
    Written(Written),
    /// A confirmation that found the notification not pending. Its current state is read after
    /// the commit, because a failed read must not fail the writes that committed.
    NotPending {
        id: NotificationId,
        by: Username,
    },
}

/// A notification row changed in the first step, waiting for its events.
struct Changed {
    kind: EventKind,
    notification: Notification,
}

/// Commits every write in one transaction; the outcomes are in the order of `writes`.
async fn commit_together(db: &DatabaseConnection, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
    let txn = db
        .begin()
        .await
        .context("begin a shared write transaction")?;

    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|&i| match &writes[i] {
        Write::Create(_) => (0, 0),
        Write::Confirm { id, .. } => (1, *id),
    });
    let mut changed: Vec<Option<Changed>> = (0..writes.len()).map(|_| None).collect();
    for i in order {
        changed[i] = match &writes[i] {
            Write::Create(new) => {
                let row = insert_notification(&txn, new)
                    .await
                    .map_err(|e| to_store_error(e, "insert a notification"))?;
                Some(Changed {
                    kind: EventKind::Created,
                    notification: convert::notification(row, Some(true))?,
                })
            }
            Write::Confirm { id, by, at } => {
                confirm_row(&txn, *id, by, *at)
                    .await?
                    .map(|notification| Changed {
                        kind: EventKind::Confirmed,
                        notification,
                    })
            }
        };
    }

    // BTreeMap iterates in name order, the order every writer locks groups in.
    let mut counts: BTreeMap<GroupName, u64> = BTreeMap::new();
    for change in changed.iter().flatten() {
        let notification = &change.notification;
        for group in audience(&notification.sender_group, &notification.receiver_group) {
            *counts.entry(group).or_default() += 1;
        }
    }
    let mut next_seq = BTreeMap::new();
    for (group, count) in counts {
        let last = advance_seq(&txn, &group, count).await?;
        next_seq.insert(group, last + 1 - count);
    }

    let mut events_of = Vec::with_capacity(writes.len());
    let mut rows = Vec::new();
    for change in &changed {
        let Some(Changed { kind, notification }) = change else {
            events_of.push(Vec::new());
            continue;
        };
        let events: Vec<Envelope> =
            audience(&notification.sender_group, &notification.receiver_group)
                .into_iter()
                .map(|group| {
                    let seq = next_seq.get_mut(&group).expect("counted above");
                    let event = Envelope::encode(*kind, &group, *seq, notification);
                    *seq += 1;
                    event
                })
                .collect();
        rows.extend(event_rows(*kind, notification.id, &events));
        events_of.push(events);
    }
    if !rows.is_empty() {
        group_event::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .context("insert group events")?;
    }
    txn.commit()
        .await
        .context("commit a shared write transaction")?;

    let outcomes = writes
        .iter()
        .zip(changed)
        .zip(events_of)
        .map(|((write, change), events)| match (write, change) {
            (Write::Create(_), Some(change)) => Outcome::Written(Written::Created(Created::New {
                notification: change.notification,
                events,
            })),
            (Write::Confirm { .. }, Some(change)) => {
                Outcome::Written(Written::Confirmed(Confirmed::Now {
                    notification: change.notification,
                    events,
                }))
            }
            (Write::Confirm { id, by, .. }, None) => Outcome::NotPending {
                id: *id,
                by: by.clone(),
            },
            (Write::Create(_), None) => unreachable!("every creation inserts a row"),
        })
        .collect();
    Ok(outcomes)
}
