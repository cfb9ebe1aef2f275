//! What went wrong talking to the database, said without database text.

use sea_orm::{DbErr, RuntimeErr};

/// What went wrong talking to the database. Its `Display` never includes
/// database text; the cause is kept as the error source, for logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (connect, pool or I/O failure).
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// The database answered with an error.
    #[error("database error")]
    Database(#[source] DbErr),
    /// A stored row could not be read back.
    #[error("stored row is corrupt")]
    Corrupt(#[source] anyhow::Error),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_unreachable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

fn is_unreachable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_) => true,
                Sqlx::Protocol(_) | Sqlx::WorkerCrashed => true,
                // PostgreSQL: class 08 (connection exception), 57P01-57P03
                // (server shutting down or not yet accepting connections).
                Sqlx::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
                _ => false,
            }
        }
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection the database refused (no such database, wrong password),
/// said in the database's own words and what to do, without the driver's
/// source position; any other error as it is.
pub(crate) fn refused_connection(err: DbErr) -> StoreError {
    let refusal = match &err {
        DbErr::Conn(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            sea_orm::sqlx::Error::Database(db) => Some((db.message().to_owned(), db.code())),
            _ => None,
        },
        _ => None,
    };
    let Some((message, code)) = refusal else {
        return err.into();
    };
    let hint = match code.as_deref() {
        Some("3D000") => {
            ": create it (CREATE DATABASE …) or point LATCHKEY_DATABASE_URL at one that exists"
        }
        Some("28P01" | "28000") => ": check the user and password in LATCHKEY_DATABASE_URL",
        _ => "",
    };
    StoreError::Database(DbErr::Custom(format!(
        "the database refused the connection: {message}{hint}"
    )))
}
