//! Turning sea-orm errors into [`StoreError`]s with context.

use herald_core::store::StoreError;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Adds the operation that failed to a database error.
pub trait StoreErrorExt<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> StoreErrorExt<T> for Result<T, DbErr> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| to_store_error(e, context))
    }
}

/// Classifies a database error: connection-level failures are `Unavailable` (HTTP 503, retry
/// later), everything else is `Internal`.
pub fn to_store_error(error: DbErr, context: &'static str) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unavailable {
            context,
            source: Box::new(error),
        }
    } else {
        StoreError::Internal {
            context,
            source: Box::new(error),
        }
    }
}

fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                e.as_ref(),
                SqlxError::Io(_)
                    | SqlxError::PoolTimedOut
                    | SqlxError::PoolClosed
                    | SqlxError::WorkerCrashed
            ) || is_busy(e.as_ref())
        }
        _ => false,
    }
}

/// SQLite's "database is locked" after the busy timeout, and PostgreSQL's admin shutdown or
/// cannot-connect states, are all transient.
fn is_busy(error: &sea_orm::sqlx::Error) -> bool {
    let sea_orm::sqlx::Error::Database(db) = error else {
        return false;
    };
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "57P01" | "57P02" | "57P03")
    )
}

pub fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
