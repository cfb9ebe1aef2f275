//! Unary calls answered straight from the request message's bytes, for a
//! method whose answers mostly need no waiting (Envoy's Check on a cached
//! token): the call skips tonic's per-call machinery (its decoding stream
//! and buffers, the request and response wrappers, the handler's boxed
//! future, the encoding body) and is answered as tonic answers it, byte
//! for byte. Anything else (a call that must wait, a compressed or
//! undecodable message, more than one message, request trailers, a body
//! that fails) goes to the method's service with the bytes already read
//! put back in front of the rest of the body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes, Frame};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use prost::bytes::{BufMut, BytesMut};
use tonic::Status;
use tonic::service::Routes;
use tower_service::Service as _;

/// A unary method's answers, where they need no waiting.
pub trait Immediate: Send + Sync + 'static {
    /// Writes the encoded answer to `message` (the request message, without
    /// its gRPC prefix) into `out`; `None` leaves the call to the method's
    /// service, which answers every call this does not (including a message
    /// that does not decode).
    fn answer(&self, message: Bytes, out: &mut BytesMut) -> Option<Result<(), Status>>;
}

/// What followed the bytes read: the end of the body, or a frame (or
/// failure) that is not more data.
enum After {
    End,
    Frame(Result<Frame<Bytes>, Status>),
}

/// Answers `request` with `handler` if it can, else with `routes`.
pub(super) async fn answer(
    handler: Arc<dyn Immediate>,
    mut routes: Routes,
    request: Request<tonic::body::Body>,
) -> Response<tonic::body::Body> {
    let (parts, mut body) = request.into_parts();
    let mut received = Received::default();
    let after = loop {
        let data = received.bytes();
        if message_len(data).is_some_and(|len| data.len() >= len) {
            if body.is_end_stream() {
                break After::End;
            }
            break body.frame().await.map_or(After::End, After::Frame);
        }
        match body.frame().await {
            None => break After::End,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => received.push(chunk),
                Err(other) => break After::Frame(Ok(other)),
            },
            Some(Err(e)) => break After::Frame(Err(e)),
        }
    };
    let data = received.into_bytes();
    // One message, uncompressed (no `grpc-encoding` at all), and nothing
    // after it.
    let single = matches!(after, After::End)
        && message_len(&data) == Some(data.len())
        && data[0] == 0
        && !parts.headers.contains_key("grpc-encoding");
    if single {
        let mut out = BytesMut::with_capacity(256);
        out.put_bytes(0, 5);
        match handler.answer(data.slice(5..), &mut out) {
            Some(Ok(())) => return reply(out),
            Some(Err(status)) => return status.into_http(),
            None => {}
        }
    }
    let (next, rest) = match after {
        After::End => (None, None),
        After::Frame(frame) => (Some(frame), Some(body)),
    };
    let replayed = Replay {
        head: Some(data),
        next,
        rest,
    };
    let request = Request::from_parts(parts, tonic::body::Body::new(replayed));
    // Boxed: an answered call's future should not carry the service's.
    match Box::pin(routes.call(request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The request body's bytes so far: the first chunk as it came (usually
/// all of it), the rest joined to it only if there is more, in one buffer
/// that grows (however small the pieces, each byte is copied about once).
#[derive(Default)]
struct Received {
    first: Bytes,
    joined: BytesMut,
}

impl Received {
    fn push(&mut self, chunk: Bytes) {
        if self.joined.is_empty() && self.first.is_empty() {
            self.first = chunk;
            return;
        }
        if self.joined.is_empty() {
            self.joined
                .extend_from_slice(&std::mem::take(&mut self.first));
        }
        self.joined.extend_from_slice(&chunk);
    }

    fn bytes(&self) -> &[u8] {
        if self.joined.is_empty() {
            &self.first
        } else {
            &self.joined
        }
    }

    fn into_bytes(self) -> Bytes {
        if self.joined.is_empty() {
            self.first
        } else {
            self.joined.freeze()
        }
    }
}

/// The whole length (prefix included) of the gRPC message `data` begins
/// with, once its prefix is there.
fn message_len(data: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = data.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix))
        .ok()?
        .checked_add(5)
}

/// An OK answer of one message (`out`, its prefix still zero), as tonic
/// writes it: `content-type: application/grpc`, the message, and
/// `grpc-status: 0` in the trailers.
fn reply(mut out: BytesMut) -> Response<tonic::body::Body> {
    let len = u32::try_from(out.len() - 5).expect("an answer is far below 4 GiB");
    out[1..5].copy_from_slice(&len.to_be_bytes());
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = Response::new(tonic::body::Body::new(Replay {
        head: Some(out.freeze()),
        next: Some(Ok(Frame::trailers(trailers))),
        rest: None,
    }));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// Bytes, then a frame, then the rest of a body: a request body with what
/// was read of it put back, or an answer's message and trailers.
struct Replay {
    head: Option<Bytes>,
    next: Option<Result<Frame<Bytes>, Status>>,
    rest: Option<tonic::body::Body>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(head) = self.head.take().filter(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if let Some(next) = self.next.take() {
            return Poll::Ready(Some(next));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(Bytes::is_empty)
            && self.next.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_joined_in_order() {
        let mut received = Received::default();
        for piece in [&b""[..], b"ab", b"", b"c", b"def"] {
            received.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(received.bytes(), b"abcdef");
        assert_eq!(received.into_bytes(), &b"abcdef"[..]);
        let mut one = Received::default();
        one.push(Bytes::from_static(b"whole"));
        assert_eq!(one.into_bytes(), &b"whole"[..]);
    }

    #[test]
    fn a_message_is_whole_once_its_prefix_and_bytes_are_there() {
        assert_eq!(message_len(b""), None);
        assert_eq!(message_len(&[0, 0, 0, 0]), None);
        assert_eq!(message_len(&[0, 0, 0, 0, 3, 1]), Some(8));
        assert_eq!(
            message_len(&[0, 0xff, 0xff, 0xff, 0xff]),
            Some(0xffff_ffff + 5)
        );
    }
}
