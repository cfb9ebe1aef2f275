//! Every gRPC service (latchkey's own, health, reflection, ext_authz) as one
//! HTTP service for [`crate::serve`], with what each call gets whatever its
//! service:
//!
//! - a request message over [`MAX_MESSAGE_BYTES`] is refused with
//!   `RESOURCE_EXHAUSTED` as soon as its length prefix arrives, before any
//!   of it is buffered;
//! - a message that does not decode is `INVALID_ARGUMENT` (the client sent
//!   it), not the `INTERNAL` prost's codec reports;
//! - a call not answered within `request_timeout`, or the client's shorter
//!   `grpc-timeout`, is `CANCELLED`;
//! - its duration is recorded by method;
//! - a method with an [`Immediate`] handler is answered by it when it can.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Request, Response};
use tonic::Status;
use tonic::service::Routes;
use tower_service::Service as _;

use super::MAX_MESSAGE_BYTES;
use super::immediate::{self, Immediate};
use crate::observe::Observe;
/// A boxed error, as hyper takes from bodies.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The methods that read a stream of request messages (server reflection).
/// Their handlers take a refused message for the end of the stream and end
/// the call OK, so the refusal is written into their trailers here.
const CLIENT_STREAMING: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The gRPC routes behind the per-call limits above.
#[derive(Clone)]
pub struct GrpcService {
    routes: Routes,
    observer: Arc<dyn Observe>,
    request_timeout: Duration,
    /// Methods (by path) answered, where they can be, by a handler.
    immediate: Vec<(&'static str, Arc<dyn Immediate>)>,
}

impl GrpcService {
    pub fn new(routes: Routes, observer: Arc<dyn Observe>, request_timeout: Duration) -> Self {
        GrpcService {
            routes: routes.prepare(),
            observer,
            request_timeout,
            immediate: Vec::new(),
        }
    }

    /// Answers calls to `path` with `handler` where it can ([`Immediate`]).
    #[must_use]
    pub fn answering(mut self, path: &'static str, handler: Arc<dyn Immediate>) -> Self {
        self.immediate.push((path, handler));
        self
    }
}

impl hyper::service::Service<Request<Incoming>> for GrpcService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let observer = Arc::clone(&self.observer);
        // Kept for timing the call: a reference-counted copy, no allocation.
        let uri = request.uri().clone();
        let path = uri.path();
        let timeout = grpc_timeout(request.headers())
            .map_or(self.request_timeout, |t| t.min(self.request_timeout));
        let refused = CLIENT_STREAMING
            .contains(&path)
            .then(|| Arc::new(OnceLock::new()));
        let request = request.map(|body| {
            tonic::body::Body::new(CappedMessages {
                body,
                framing: Framing::default(),
                refused: refused.clone(),
            })
        });
        // Each call's span names its method; the services add the token id.
        let span = tracing::debug_span!("grpc", path, token_id = tracing::field::Empty);
        let handler = self
            .immediate
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, handler)| Arc::clone(handler));
        let mut routes = self.routes.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let answer = async {
                    match handler {
                        Some(handler) => Ok(immediate::answer(handler, routes, request).await),
                        // axum's router, inside, is always ready.
                        None => routes.call(request).await,
                    }
                };
                let response = match tokio::time::timeout(timeout, answer).await {
                    Ok(Ok(response)) => match refused {
                        None => client_error_for_bad_messages(response),
                        Some(refused) => {
                            response.map(|body| tonic::body::Body::new(Refusable { body, refused }))
                        }
                    },
                    Ok(Err(never)) => match never {},
                    Err(_) => Status::cancelled("Timeout expired").into_http(),
                };
                // Unknown services and methods answer UNIMPLEMENTED, and share
                // one series.
                let status = response.headers().get(Status::GRPC_STATUS);
                observer.call(
                    uri.path(),
                    status.map(|v| v.as_bytes()) != Some(b"12"),
                    started.elapsed(),
                );
                Ok(response)
            },
            span,
        ))
    }
}

/// prost's decode errors, as tonic reports them (`INTERNAL`, its message
/// percent-encoded), are the client's: `INVALID_ARGUMENT`.
fn client_error_for_bad_messages(
    mut response: Response<tonic::body::Body>,
) -> Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let undecodable = headers.get(Status::GRPC_STATUS).map(|v| v.as_bytes()) == Some(b"13")
        && headers.get(Status::GRPC_MESSAGE).is_some_and(|m| {
            m.as_bytes()
                .starts_with(b"failed%20to%20decode%20Protobuf%20message")
        });
    if undecodable {
        headers.insert(
            Status::GRPC_STATUS,
            hyper::header::HeaderValue::from_static("3"),
        );
    }
    response
}

/// The client's `grpc-timeout` (gRPC over HTTP/2: up to 8 digits and a
/// unit), if it sent a valid one.
fn grpc_timeout(headers: &hyper::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A request body that fails as soon as a gRPC message's length prefix
/// says it is over [`MAX_MESSAGE_BYTES`]: the refusal (a [`Status`], which
/// tonic answers as it is) comes before the message is buffered.
struct CappedMessages {
    body: Incoming,
    framing: Framing,
    /// Where a refusal is kept for the response, on a client-streaming call.
    refused: Option<Arc<OnceLock<Status>>>,
}

/// Where the gRPC message framing is in a stream of bytes.
#[derive(Default)]
struct Framing {
    /// The 5-byte prefix (compressed flag, big-endian length) being read.
    header: [u8; 5],
    header_filled: usize,
    /// Bytes of the current message still to pass.
    message_left: u64,
}

impl Framing {
    /// Follows the framing through `data`.
    fn check(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.message_left).unwrap_or(usize::MAX));
                self.message_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.header_filled);
            self.header[self.header_filled..self.header_filled + n].copy_from_slice(&data[..n]);
            self.header_filled += n;
            data = &data[n..];
            if self.header_filled == 5 {
                self.header_filled = 0;
                let [_, len @ ..] = self.header;
                let len = u32::from_be_bytes(len);
                if len as usize > MAX_MESSAGE_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "the request message is {len} bytes; the limit is {MAX_MESSAGE_BYTES}"
                    )));
                }
                self.message_left = u64::from(len);
            }
        }
        Ok(())
    }
}

impl Body for CappedMessages {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = self.framing.check(data)
        {
            if let Some(refused) = &self.refused {
                let _ = refused.set(status.clone());
            }
            return Poll::Ready(Some(Err(status.into())));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client-streaming call's response, whose trailers carry the refusal of
/// a request message if there was one.
struct Refusable {
    body: tonic::body::Body,
    refused: Arc<OnceLock<Status>>,
}

impl Body for Refusable {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled;
        };
        match (frame.into_trailers(), self.refused.get()) {
            (Ok(mut trailers), Some(status)) => {
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            (Ok(trailers), None) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            (Err(frame), _) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.resize(5 + len as usize, b'x');
        m
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_split() {
        let mut bytes = message(10);
        bytes.extend(message(MAX_MESSAGE_BYTES as u32));
        bytes.extend(message(0));
        for chunk in [1, 3, 5, 7, 4096, bytes.len()] {
            let mut framing = Framing::default();
            for part in bytes.chunks(chunk) {
                framing.check(part).unwrap();
            }
        }
    }

    #[test]
    fn a_longer_message_is_refused_at_its_prefix() {
        let mut bytes = message(1);
        bytes.extend_from_slice(&[0, 0, 0x40, 0, 0]); // 4 MiB, nothing of it sent
        for chunk in [1, 2, 6, bytes.len()] {
            let mut framing = Framing::default();
            let refused = bytes
                .chunks(chunk)
                .find_map(|part| framing.check(part).err());
            let status = refused.expect("refused");
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(status.message().contains("4194304"), "{}", status.message());
        }
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_spells_them() {
        let timeout = |v: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("123456789S"), None);
        assert_eq!(timeout("S"), None);
        assert_eq!(timeout("5x"), None);
        assert_eq!(timeout("-5S"), None);
    }
}
