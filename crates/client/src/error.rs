//! What can go wrong calling latchkey.

use std::fmt;

/// An error from the client: a setting it cannot use, latchkey out of
/// reach, or an error status latchkey answered with.
#[derive(Debug)]
pub enum Error {
    /// A setting that cannot be used (an address, a certificate, a cache TTL).
    Config(String),
    /// latchkey could not be reached at `addr`, or answered `UNAVAILABLE`.
    Unavailable {
        /// The address that was tried.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// latchkey refused the call: its status names the problem and, for bad
    /// input, the field.
    Status(tonic::Status),
}

impl Error {
    /// The gRPC status code this error stands for.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Config(_) => tonic::Code::InvalidArgument,
            Error::Unavailable { .. } => tonic::Code::Unavailable,
            Error::Status(status) => status.code(),
        }
    }

    /// `status` from a call to `addr`, with `UNAVAILABLE` saying where.
    pub(crate) fn from_status(addr: &str, status: tonic::Status) -> Error {
        if status.code() == tonic::Code::Unavailable {
            Error::Unavailable {
                addr: addr.to_owned(),
                detail: detail(&status),
            }
        } else {
            Error::Status(status)
        }
    }
}

/// The status's message, with its source's when tonic put the cause there
/// (a refused connection says only "tcp connect error" otherwise).
fn detail(status: &tonic::Status) -> String {
    chain(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

/// `first` and then each cause, on one line, skipping a cause whose words
/// are already there (tonic's transport errors repeat their cause's).
pub(crate) fn chain(
    first: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    let mut out = first;
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(message) => f.write_str(message),
            Error::Unavailable { addr, detail } => {
                write!(f, "cannot reach latchkey at {addr}: {detail}")
            }
            Error::Status(status) => {
                write!(f, "{}: {}", code_name(status.code()), status.message())
            }
        }
    }
}

impl std::error::Error for Error {}

/// The canonical name of a gRPC status code, as the gRPC docs spell it.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
