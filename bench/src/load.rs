//! `latchkey-bench load`: Verify at full speed over many tokens, each call
//! a different one in turn, on raw HTTP/2 with every request encoded up
//! front (so the client costs little next to the server, as h2load does,
//! which sends one body only).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use latchkey::grpc::pb::VerifyRequest;
use prost::Message as _;
use tokio::io::AsyncBufReadExt;

const PATH: &str = "/latchkey.v1.TokenVerify/Verify";

/// Calls, answered VALID and otherwise, per whole second of the run.
struct Tally {
    valid: Vec<AtomicU64>,
    other: AtomicU64,
}

/// Runs Verify for `seconds` on the first `count` tokens of `tokens`, in
/// turn, over `connections` × `streams` calls in flight; prints one JSON
/// line: calls, VALID answers, others, calls per second overall and in each
/// second.
pub async fn load(
    addr: &str,
    tokens: &Path,
    count: usize,
    seconds: u64,
    connections: usize,
    streams: usize,
) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = addr.trim_start_matches("http://").parse()?;
    let mut lines = tokio::io::BufReader::new(tokio::fs::File::open(tokens).await?).lines();
    let mut bodies = Vec::with_capacity(count);
    while bodies.len() < count
        && let Some(token) = lines.next_line().await?
    {
        let message = VerifyRequest {
            token,
            required_scopes: vec!["read".into()],
            cost: None,
            client: None,
        }
        .encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
        frame.extend_from_slice(&message);
        bodies.push(Bytes::from(frame));
    }
    anyhow::ensure!(!bodies.is_empty(), "no tokens in {}", tokens.display());
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Tally {
        valid: (0..=seconds).map(|_| AtomicU64::new(0)).collect(),
        other: AtomicU64::new(0),
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let uri: http::Uri = format!("http://{addr}{PATH}").parse()?;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (client, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        for _ in 0..streams {
            let (client, uri, bodies, next, tally) = (
                client.clone(),
                uri.clone(),
                Arc::clone(&bodies),
                Arc::clone(&next),
                Arc::clone(&tally),
            );
            calls.spawn(async move {
                while Instant::now() < deadline {
                    let body = &bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()];
                    let valid = call(client.clone(), &uri, body.clone()).await?;
                    let second = started.elapsed().as_secs() as usize;
                    if valid {
                        if let Some(slot) = tally.valid.get(second) {
                            slot.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(done) = calls.join_next().await {
        done??;
    }
    let took = started.elapsed().as_secs_f64();
    let per_second: Vec<u64> = tally
        .valid
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    let valid: u64 = per_second.iter().sum();
    let other = tally.other.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "calls": valid + other, "valid": valid, "other": other, "seconds": took,
            "per_second": (valid + other) as f64 / took, "valid_each_second": per_second,
        })
    );
    Ok(())
}

/// One Verify; whether it answered VALID (grpc-status 0).
async fn call(
    client: h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    body: Bytes,
) -> anyhow::Result<bool> {
    let mut client = client.ready().await?;
    let request = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut stream) = client.send_request(request, false)?;
    stream.send_data(body, true)?;
    let mut body = response.await?.into_body();
    let mut reply = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        reply.extend_from_slice(&chunk);
    }
    let ok = body
        .trailers()
        .await?
        .and_then(|t| t.get("grpc-status").cloned())
        .is_some_and(|s| s == "0");
    // The reply's first field: verdict 1, VALID.
    Ok(ok && reply.get(5..7) == Some(&[0x08, 0x01]))
}
