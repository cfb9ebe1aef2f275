//! Check on the wire: a call the cache answers skips tonic, and must still
//! be answered exactly as tonic answers it (headers, message, trailers),
//! whatever the framing. Every framing that is not one plain message goes
//! to tonic, with what was read of it put back.

use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use h2::client::SendRequest;
use http::HeaderMap;
use prost::Message as _;
use tokio::net::TcpStream;

use crate::ext_authz::{check_request, denial};
use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_cached_answer_is_the_answer_tonic_gives,
    every_framing_is_answered_as_tonic_answers_it,
);

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Request headers besides gRPC's.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A part of a request body as sent.
enum Part {
    Data(Vec<u8>),
    Trailers(HeaderMap),
}

/// What the server answered: its headers (without `date`), the body's
/// bytes, and the trailers.
#[derive(Debug, PartialEq)]
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

impl Answer {
    /// The call's grpc-status, from a trailers-only answer or the trailers.
    fn grpc_status(&self) -> &str {
        self.headers
            .get("grpc-status")
            .or_else(|| self.trailers.as_ref()?.get("grpc-status"))
            .map_or("none", |v| v.to_str().unwrap())
    }

    /// The answer's one message.
    fn message(&self) -> CheckResponse {
        assert_eq!(self.grpc_status(), "0", "{self:?}");
        let len = u32::from_be_bytes(self.body[1..5].try_into().unwrap()) as usize;
        assert_eq!((self.body[0], self.body.len()), (0, 5 + len), "one message");
        CheckResponse::decode(&self.body[5..]).unwrap()
    }
}

async fn connect(app: &TestApp) -> SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// One Check call whose body is `parts`, with `headers` besides gRPC's.
async fn call(
    client: &SendRequest<bytes::Bytes>,
    headers: Headers<'_>,
    parts: Vec<Part>,
) -> Answer {
    let mut request = http::Request::post(format!("http://latchkey{CHECK}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), parts.is_empty())
        .unwrap();
    let last = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        match part {
            Part::Data(bytes) => stream.send_data(bytes.into(), i + 1 == last).unwrap(),
            Part::Trailers(trailers) => stream.send_trailers(trailers).unwrap(),
        }
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered in time")
        .unwrap();
    let (parts, mut body) = response.into_parts();
    let mut headers = parts.headers;
    headers.remove("date");
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Answer {
        headers,
        body: bytes,
        trailers: body.trailers().await.unwrap(),
    }
}

/// `message` with its gRPC prefix (compressed flag 0).
fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

fn whole(request: &CheckRequest) -> Vec<Part> {
    vec![Part::Data(framed(&request.encode_to_vec()))]
}

fn trailers() -> Part {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-note", "after".parse().unwrap());
    Part::Trailers(trailers)
}

async fn a_cached_answer_is_the_answer_tonic_gives(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = connect(&app).await;
    for required in ["read", "admin"] {
        let (_, secret) = app.create_token("alice", &["read"]).await;
        let request = check_request(Some(&format!("Bearer {secret}")), Some(required));
        let before = app.gate.lookups();
        // A token not yet cached: answered through tonic, from the database.
        let looked_up = call(&client, &[], whole(&request)).await;
        assert_eq!(app.gate.lookups(), before + 1);
        // Cached now: answered without tonic, and without a lookup.
        let cached = call(&client, &[], whole(&request)).await;
        assert_eq!(app.gate.lookups(), before + 1);
        assert_eq!(cached, looked_up, "required {required}");
        let answer = cached.message();
        match required {
            "read" => assert_eq!(answer.status.unwrap().code, 0),
            _ => assert_eq!(denial(&answer).0, 403),
        }
    }
    // No token at all is answered from the request alone; request trailers
    // send the same call through tonic.
    let bare = check_request(None, None);
    let answered = call(&client, &[], whole(&bare)).await;
    let mut through_tonic = whole(&bare);
    through_tonic.push(trailers());
    assert_eq!(call(&client, &[], through_tonic).await, answered);
    assert_eq!(denial(&answered.message()).0, 401);
}

async fn every_framing_is_answered_as_tonic_answers_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = connect(&app).await;
    let (_, secret) = app.create_token("alice", &["read"]).await;
    let request = check_request(Some(&format!("Bearer {secret}")), Some("read"));
    let message = request.encode_to_vec();
    let frame = framed(&message);
    let allowed = call(&client, &[], whole(&request)).await;
    assert_eq!(allowed.message().status.unwrap().code, 0);

    // Framings of the same call that tonic answers as the call.
    let mut twice = frame.clone();
    twice.extend_from_slice(&frame);
    let same: [(&str, Vec<Part>); 5] = [
        (
            "a byte per frame",
            frame.iter().map(|b| Part::Data(vec![*b])).collect(),
        ),
        (
            "an empty frame ending the body",
            vec![Part::Data(frame.clone()), Part::Data(Vec::new())],
        ),
        (
            "request trailers",
            vec![Part::Data(frame.clone()), trailers()],
        ),
        ("two messages", vec![Part::Data(twice)]),
        ("sent again", whole(&request)),
    ];
    for (what, parts) in same {
        assert_eq!(call(&client, &[], parts).await, allowed, "{what}");
    }

    // Framings tonic refuses, with its status and no answer.
    let mut compressed = frame.clone();
    compressed[0] = 1;
    let mut oversized = vec![0];
    oversized.extend_from_slice(&(4u32 << 20).to_be_bytes());
    let refused: [(&str, Headers, Vec<Part>, &str); 6] = [
        (
            "garbage",
            &[],
            vec![Part::Data(framed(b"\xff\xff\xff"))],
            "3",
        ),
        (
            "compressed, no encoding",
            &[],
            vec![Part::Data(compressed)],
            "13",
        ),
        ("gzip", &[("grpc-encoding", "gzip")], whole(&request), "12"),
        (
            "cut short",
            &[],
            vec![Part::Data(frame[..20].to_vec())],
            "13",
        ),
        ("no message", &[], vec![Part::Data(Vec::new())], "13"),
        (
            "over the message cap",
            &[],
            vec![Part::Data(oversized)],
            "8",
        ),
    ];
    for (what, headers, parts, status) in refused {
        let answer = call(&client, headers, parts).await;
        assert_eq!(answer.grpc_status(), status, "{what}: {answer:?}");
        assert!(answer.body.is_empty(), "{what}: {answer:?}");
    }

    // Hostile headers are denied as any bad token is, never an error.
    for authorization in ["Bearer a\r\nb", "Bearer \0", &"x".repeat(8 << 10)] {
        let hostile = check_request(Some(authorization), Some("read"));
        let answer = call(&client, &[], whole(&hostile)).await;
        assert_eq!(denial(&answer.message()).0, 401, "{authorization:.20}");
    }
    // And the connection still serves.
    assert_eq!(call(&client, &[], whole(&request)).await, allowed);
}
