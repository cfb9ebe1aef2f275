//! The request-path error and its one mapping to `tonic::Status`.
//!
//! Rule: handlers and the services behind them return [`Error`], a `thiserror`
//! enum whose variants are the answers a caller can act on. Start-up and
//! background tasks use `anyhow` with `.context(…)`, since nobody but an
//! operator reads those. Infrastructure faults log their cause chain here and
//! reach the caller as a fixed message: an auth service never echoes database
//! text or token material.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { field, reason } => {
                let message = format!("{field}: {reason}");
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request_violation(field, reason),
                )
            }
            Error::Unauthenticated => Status::unauthenticated(e.to_string()),
            Error::PermissionDenied(_) => Status::permission_denied(e.to_string()),
            Error::TokenReused => Status::unauthenticated(e.to_string()),
            Error::NotFound => Status::not_found(e.to_string()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::ResourceExhausted {
                limit,
                subject,
                message,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_quota_failure_violation(subject, limit);
                if let Some(after) = retry_after {
                    details.set_retry_info(Some(after));
                }
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            // A flood is not worth a log line per refusal: the metric counts them.
            Error::Overloaded => Status::unavailable(e.to_string()),
            Error::Unavailable(ref cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "request failed: database unavailable"
                );
                Status::unavailable("database unavailable")
            }
            Error::Internal(ref cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "request failed: internal error"
                );
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_reaches_the_caller_without_its_cause() {
        let e = Error::Internal(anyhow::anyhow!("relation \"tokens\" does not exist"));
        let status = Status::from(e);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_invalid_argument_names_the_field_in_message_and_details() {
        let status = Status::from(Error::invalid("name", "must be at most 128 characters"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "name: must be at most 128 characters");
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "name");
    }
}
