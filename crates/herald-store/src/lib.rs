//! Herald's storage: the [`herald_core::store`] traits implemented over sea-orm, for SQLite (the
//! default, one file) and PostgreSQL (deployments with several gateway instances).
//!
//! - [`connect`]: opening the database with per-backend settings, and running migrations.
//! - `directory`: users, groups and send rules.
//! - `notifications`: notifications, read marks and the per-group event log.
//!
//! Concurrency rests on the database, never on process-local locks, so any number of gateway
//! instances can share one PostgreSQL database:
//! - a group's seq is a counter on its row, incremented in the transaction that writes the event;
//!   the increment row-locks the group until commit, so a group's events commit in seq order;
//! - a confirmation is one conditional `UPDATE ... WHERE status = 'pending'`;
//! - idempotent creation rests on a unique index over (sender, idempotency_key).
//!
//! Within one process, creations and confirmations go through a write queue (`batch`) that
//! commits whatever is waiting in one transaction. Writers of the same groups then share their
//! round trips and commits instead of queueing on the group locks one by one.

mod batch;
mod convert;
mod directory;
pub mod entity;
mod error;
mod notifications;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use batch::WriteQueue;
use herald_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

pub use batch::{WRITE_BATCH_RETRIES, WRITE_BATCH_SIZE};
pub use error::StoreErrorExt;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// How long SQLite waits for a competing writer's lock before failing.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The sea-orm store; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
    /// Started on the first write, on the runtime that makes it.
    writes: Arc<OnceLock<WriteQueue>>,
}

impl SeaStore {
    /// Opens a connection pool for `url` (`sqlite://...` or `postgres://...`).
    ///
    /// SQLite runs in WAL mode with a busy timeout and foreign keys on, so readers do not block
    /// the writer and concurrent writers queue instead of failing.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, sea_orm::DbErr> {
        let mut connect = ConnectOptions::new(url.to_owned());
        connect
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_timeout(options.acquire_timeout)
            .sqlx_logging(false);

        if url.starts_with("sqlite:") {
            let busy_timeout = options.sqlite_busy_timeout;
            connect.map_sqlx_sqlite_opts(move |opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(busy_timeout)
                    .foreign_keys(true)
            });
        }

        let db = Database::connect(connect).await?;
        Ok(Self::from_connection(db))
    }

    /// Wraps an open connection.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self {
            db,
            writes: Arc::default(),
        }
    }

    fn writes(&self) -> &WriteQueue {
        self.writes
            .get_or_init(|| WriteQueue::start(self.db.clone()))
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Applies pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, sea_orm::DbErr> {
        let pending = Migrator::get_pending_migrations(&self.db).await?.len();
        Migrator::up(&self.db, None).await?;
        Ok(pending)
    }

    /// Whether the database has no groups and no users yet.
    pub async fn is_empty(&self) -> Result<bool, sea_orm::DbErr> {
        use sea_orm::{EntityTrait, PaginatorTrait};
        let groups = entity::group::Entity::find().count(&self.db).await?;
        let users = entity::user::Entity::find().count(&self.db).await?;
        Ok(groups == 0 && users == 0)
    }

    /// The backend's name for logs: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => "sqlite",
            sea_orm::DbBackend::Postgres => "postgres",
            _ => "other",
        }
    }
}
