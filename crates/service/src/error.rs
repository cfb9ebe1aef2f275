//! The request-path error.
//!
//! Rule: handlers and the services behind them return [`Error`], a `thiserror`
//! enum whose variants are the answers a caller can act on. Start-up and
//! background tasks use `anyhow` with `.context(…)`, since nobody but an
//! operator reads those. The API crate maps it to gRPC status and HTTP
//! answers in one place (`latchkey_api::status`), where infrastructure faults
//! log their cause chain and reach the caller as a fixed message: an auth
//! service never echoes database text or token material.

use crate::store::StoreError;
use crate::token::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule; `field` is its name as the API spells it.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("missing or invalid credential")]
    Unauthenticated,
    /// A valid credential without the scope the call needs (named).
    #[error("the credential lacks scope {0}")]
    PermissionDenied(&'static str),
    /// A token already replaced by a renewal was presented for renewal: its
    /// whole renewal chain has been revoked.
    #[error(
        "the token was already replaced by a renewal; presenting it again means a secret of its \
         renewal chain has leaked, so every token of the chain has been revoked"
    )]
    TokenReused,
    #[error("token not found")]
    NotFound,
    #[error("{0}")]
    FailedPrecondition(String),
    /// A creation limit was reached; `limit` names the setting.
    #[error("{message}")]
    ResourceExhausted {
        limit: &'static str,
        subject: String,
        message: String,
        /// When a retry can succeed, if that is known.
        retry_after: Option<std::time::Duration>,
    },
    /// The answer needed a database lookup, and `lookups.max_pending` were
    /// already in progress: retry.
    #[error("too many token lookups in progress; retry")]
    Overloaded,
    /// The answer needed the database and the database was unreachable.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Error::Unavailable(e.into()),
            StoreError::Database(_) | StoreError::Corrupt(_) => Error::Internal(e.into()),
        }
    }
}
