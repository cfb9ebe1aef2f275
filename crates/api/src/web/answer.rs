//! The JSON answers of the HTTP endpoints.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::error::Error;

pub(super) type Answer = Response<Full<Bytes>>;
/// A JSON answer that no cache may keep (it describes a credential).
pub(super) fn json(status: StatusCode, body: &impl serde::Serialize) -> Answer {
    json_bytes(status, json_body(body))
}

/// `body` as JSON, written in one buffer and kept at its length (a cached
/// token may keep it: see `Snapshot::view`).
pub(super) fn json_body(body: &impl serde::Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, body)
        .expect("an answer of strings, numbers and maps serializes");
    Bytes::from(out.into_boxed_slice())
}

/// [`json`] of a body already written.
pub(super) fn json_bytes(status: StatusCode, body: Bytes) -> Answer {
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// An OAuth-style error answer (RFC 6749 5.2).
pub(super) fn error(status: StatusCode, code: &str, description: &str) -> Answer {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// The answer when latchkey could not decide (the database unreachable on a
/// cache miss, or too many lookups in progress): the caller fails closed
/// and may retry. Logged as the gRPC services log it.
pub(super) fn undecided(e: Error) -> Answer {
    let status = crate::status::status(e);
    match status.code() {
        tonic::Code::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            status.message(),
        ),
        tonic::Code::InvalidArgument => {
            error(StatusCode::BAD_REQUEST, "invalid_request", status.message())
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        ),
    }
}
