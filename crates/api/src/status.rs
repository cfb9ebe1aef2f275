//! The request-path error as callers see it: one mapping to gRPC status
//! (HTTP answers are built from the same status). Infrastructure faults log
//! their cause chain here and reach the caller as a fixed message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// The gRPC status a caller gets for `e`.
pub fn status(e: Error) -> Status {
    {
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
        let status = status(e);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_invalid_argument_names_the_field_in_message_and_details() {
        let status = status(Error::invalid("name", "must be at most 128 characters"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "name: must be at most 128 characters");
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "name");
    }
}
