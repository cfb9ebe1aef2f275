//! What one peer can do to a port with connections alone: open thousands
//! and send nothing, keep one open and idle, keep one forever, or push a
//! message far past the size limit. Each port (gRPC, HTTP, metrics) sends
//! such connections away and keeps serving everyone else. Addresses in
//! 127.0.0.0/8 stand for separate hosts.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use latchkey::grpc::pb::{Verdict, VerifyRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(addr).await
}

/// Whether the server has closed `stream`: a read sees the end (or a
/// reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// How many descriptors this process may open (its soft limit).
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// A Verify over a new HTTP/2 connection from `from`.
async fn verify_from(from: &str, addr: SocketAddr, secret: &str) -> Verdict {
    let tcp = connect_from(from, addr).await.expect("connects");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let (response, mut stream) = open_verify(&mut client, addr).await;
    let request = VerifyRequest {
        token: secret.to_owned(),
        required_scopes: vec![],
        cost: None,
        client: None,
    };
    stream.send_data(grpc_frame(&request).into(), true).unwrap();
    let response = response.await.expect("an answer");
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.expect("body"));
    }
    let reply: latchkey::grpc::pb::VerifyResponse =
        prost::Message::decode(&bytes[5..]).expect("a VerifyResponse");
    reply.verdict()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_silent_connections_from_one_host_leave_the_port_to_the_others() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.handshake_timeout = Duration::from_secs(3);
    })
    .await;
    let (_, secret) = app.create_token("alice", &[]).await;
    // As many as the descriptor limit allows, up to 10,000 (the server's
    // side of those it keeps counts against the same limit).
    let count = 10_000.min(open_file_limit().saturating_sub(2_000));
    let started = Instant::now();
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(
            connect_from("127.0.0.2", app.addr)
                .await
                .expect("TCP connect"),
        );
    }
    eprintln!(
        "{count} silent connections opened in {:?}",
        started.elapsed()
    );

    // Another host is served at once.
    let asked = Instant::now();
    let verdict = tokio::time::timeout(
        Duration::from_secs(5),
        verify_from("127.0.0.3", app.addr, &secret),
    )
    .await
    .expect("another host is served while the flood holds its connections");
    assert_eq!(verdict, Verdict::Valid);
    let waited = asked.elapsed();
    eprintln!("another host served in {waited:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    // Every silent socket is closed: those past the per-host cap at once,
    // the rest at the handshake timeout.
    let mut still_open = 0;
    for stream in &mut silent {
        if !closed_within(stream, Duration::from_secs(5)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "silent connections left open");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_gets_at_most_its_share_of_connections_on_every_port() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_connections_per_ip = 3;
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (_, secret) = app.create_token("alice", &[]).await;
    for port in [app.addr, app.metrics_addr, app.http_addr.unwrap()] {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect_from("127.0.0.4", port).await.unwrap());
        }
        let mut fourth = connect_from("127.0.0.4", port).await.unwrap();
        assert!(
            closed_within(&mut fourth, Duration::from_secs(2)).await,
            "{port}: a fourth connection from one host was kept"
        );
        // Not closed: the three within the share.
        for stream in &mut held {
            assert!(!closed_within(stream, Duration::from_millis(100)).await);
        }
        // Another host is not held to the first one's share.
        let mut other = connect_from("127.0.0.5", port).await.unwrap();
        assert!(!closed_within(&mut other, Duration::from_millis(300)).await);
    }
    assert_eq!(
        verify_from("127.0.0.6", app.addr, &secret).await,
        Verdict::Valid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_handshake_timeout_on_every_port() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.handshake_timeout = Duration::from_millis(500);
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    for port in [app.addr, app.metrics_addr, app.http_addr.unwrap()] {
        let started = Instant::now();
        let mut silent = TcpStream::connect(port).await.unwrap();
        // Half a preface is not an opening either.
        let mut half = TcpStream::connect(port).await.unwrap();
        half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "{port}"
        );
        assert!(
            closed_within(&mut half, Duration::from_secs(5)).await,
            "{port}"
        );
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
    // The metrics port serves a scrape on a connection that speaks in time.
    let scrape = http_request(app.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(scrape.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_call_open_is_sent_away_after_the_idle_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let (_, secret) = app.create_token("alice", &[]).await;
    let request = VerifyRequest {
        token: secret.clone(),
        required_scopes: vec![],
        cost: None,
        client: None,
    };

    // Preface and SETTINGS, pings answered (h2 does), but no call: GOAWAY.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (_client, connection) = h2::client::handshake(tcp).await.unwrap();
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "an idle connection was kept");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // A call open longer than the idle timeout keeps its connection; the
    // clock starts when the last one ends.
    let (mut client, mut connection) = h2_connection(app.addr).await;
    let (response, mut stream) = open_verify(&mut client, app.addr).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!connection.is_finished(), "sent away with a call open");
    stream.send_data(grpc_frame(&request).into(), true).unwrap();
    assert_eq!(grpc_status(response).await.as_deref(), Some("0"));
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut connection).await;
    assert!(ended.is_ok(), "idle after its call, and kept");

    // A tonic channel reconnects by itself after being sent away.
    let mut verifier = app.verifier.clone();
    for _ in 0..2 {
        let reply = verifier.verify(request.clone()).await.expect("Verify");
        assert_eq!(reply.into_inner().verdict(), Verdict::Valid);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_connection_is_sent_away_and_closed_after_its_grace_period() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_connection_age = Duration::from_millis(1_000);
        s.server.max_connection_age_grace = Duration::from_millis(1_000);
        s.server.request_timeout = Duration::from_secs(30);
    })
    .await;
    let (_, secret) = app.create_token("alice", &[]).await;
    let (mut client, connection) = h2_connection(app.addr).await;
    let started = Instant::now();
    // One call finishes within the grace period, another never does.
    let (finished, mut finished_stream) = open_verify(&mut client, app.addr).await;
    let (held, _held_stream) = open_verify(&mut client, app.addr).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // Told to go away (at 0.9-1.1 s): no new call is taken.
    assert!(open_verify_checked(&mut client, app.addr).await.is_err());
    let request = VerifyRequest {
        token: secret,
        required_scopes: vec![],
        cost: None,
        client: None,
    };
    finished_stream
        .send_data(grpc_frame(&request).into(), true)
        .unwrap();
    assert_eq!(grpc_status(finished).await.as_deref(), Some("0"));
    // The held call is cut off at the end of the grace period.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("closed after its grace period");
    assert!(grpc_status(held).await.is_none());
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(1_900), "{lived:?}");
}

/// Opens a Verify call and sends nothing yet.
/// An HTTP/2 connection to `addr`, driven on its own task.
async fn h2_connection(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (client, tokio::spawn(connection))
}

async fn open_verify(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    open_verify_checked(client, addr)
        .await
        .expect("stream opens")
}

async fn open_verify_checked(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>), h2::Error> {
    open_call(client, addr, "/latchkey.v1.TokenVerify/Verify").await
}

async fn open_call(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    path: &str,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>), h2::Error> {
    let mut ready = client.clone().ready().await?;
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let opened = ready.send_request(request, false)?;
    *client = ready;
    Ok(opened)
}

/// A gRPC length-prefixed message.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The grpc-status of a response, from its headers (an immediate refusal)
/// or its trailers; `None` if the call was cut off.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<String> {
    grpc_answer(response).await.map(|(status, _)| status)
}

/// The grpc-status and grpc-message of a response.
async fn grpc_answer(response: h2::client::ResponseFuture) -> Option<(String, String)> {
    let response = response.await.ok()?;
    let read = |h: &http::HeaderMap| {
        let status = h.get("grpc-status")?.to_str().ok()?.to_owned();
        let message = h
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Some((status, message))
    };
    if let Some(answer) = read(response.headers()) {
        return Some(answer);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.ok()?;
    }
    read(&body.trailers().await.ok()??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_a_message_over_64_kib_at_its_length_prefix() {
    let app = spawn_app(Backend::Sqlite).await;
    let (mut client, _connection) = h2_connection(app.addr).await;
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/latchkey.v1.TokenVerify/Verify",
        "/latchkey.v1.TokenAdmin/CreateToken",
        "/latchkey.v1.TokenSelf/LookupSelf",
        "/envoy.service.auth.v3.Authorization/Check",
    ] {
        // A 4 MiB message announced, and only its first kilobyte sent: the
        // refusal does not wait for the rest.
        let (response, mut stream) = open_call(&mut client, app.addr, path).await.unwrap();
        let mut start = vec![0u8];
        start.extend_from_slice(&(4u32 << 20).to_be_bytes());
        start.extend(std::iter::repeat_n(b'x', 1024));
        stream.send_data(start.into(), false).unwrap();
        let (status, message) = tokio::time::timeout(Duration::from_secs(5), grpc_answer(response))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer to an unfinished 4 MiB message"))
            .unwrap_or_else(|| panic!("{path}: cut off"));
        assert_eq!(
            status, "8",
            "{path}: RESOURCE_EXHAUSTED, got {status} {message}"
        );
        assert!(message.len() < 200, "{path}: {message}");
    }
    // Exactly 64 KiB is fine (it decodes as a request, whatever it says).
    let (response, mut stream) = open_call(&mut client, app.addr, "/grpc.health.v1.Health/Check")
        .await
        .unwrap();
    let mut padded = vec![0u8];
    padded.extend_from_slice(&(64u32 << 10).to_be_bytes());
    // Field 1 (service), a string of 64 KiB minus its 4-byte key and length.
    let mut message = vec![0x0a];
    let len = (64 << 10) - 4;
    message.extend_from_slice(&[
        (len & 0x7f) as u8 | 0x80,
        ((len >> 7) & 0x7f) as u8 | 0x80,
        (len >> 14) as u8,
    ]);
    message.extend(std::iter::repeat_n(b'a', len));
    padded.extend(message);
    stream.send_data(padded.into(), true).unwrap();
    let (status, _) = grpc_answer(response).await.unwrap();
    assert_eq!(status, "5", "NOT_FOUND: no such service to report on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_does_not_decode_is_invalid_argument_on_every_service() {
    let app = spawn_app(Backend::Sqlite).await;
    let (mut client, _connection) = h2_connection(app.addr).await;
    for path in [
        "/grpc.health.v1.Health/Check",
        "/latchkey.v1.TokenVerify/Verify",
        "/latchkey.v1.TokenAdmin/GetToken",
        "/envoy.service.auth.v3.Authorization/Check",
    ] {
        let (response, mut stream) = open_call(&mut client, app.addr, path).await.unwrap();
        // Field 1 as a length-delimited value running past the message.
        let garbage = [0u8, 0, 0, 0, 3, 0x0a, 0x7f, 0x01];
        stream.send_data(garbage.to_vec().into(), true).unwrap();
        let (status, message) = grpc_answer(response).await.unwrap();
        assert_eq!(
            status, "3",
            "{path}: INVALID_ARGUMENT, got {status} {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_methods_that_do_not_exist_share_one_metric_series() {
    let app = spawn_app(Backend::Sqlite).await;
    let (mut client, _connection) = h2_connection(app.addr).await;
    for i in 0..70 {
        for path in [
            format!("/latchkey.v1.TokenVerify/Bogus{i}"),
            format!("/grpc.health.v1.Nope{i}/Check"),
        ] {
            let (response, mut stream) = open_call(&mut client, app.addr, &path).await.unwrap();
            stream.send_data(vec![0, 0, 0, 0, 0].into(), true).unwrap();
            assert_eq!(grpc_status(response).await.as_deref(), Some("12"));
        }
    }
    app.verify("lk_x", &[]).await;
    let scrape = http_request(app.metrics_addr, "GET", "/metrics", &[], b"").await;
    let series: Vec<&str> = scrape
        .body
        .lines()
        .filter(|l| l.starts_with("latchkey_grpc_call_duration_seconds_count"))
        .collect();
    assert!(
        series.iter().any(|l| l.contains("method=\"other\"")),
        "{series:?}"
    );
    assert!(
        series.iter().any(|l| l.contains("TokenVerify/Verify\"")),
        "{series:?}"
    );
    assert!(
        !series
            .iter()
            .any(|l| l.contains("Bogus") || l.contains("Nope")),
        "{series:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_pauses_accepting_instead_of_spinning() {
    use std::io::{BufRead as _, BufReader};

    let db = TestDb::new(Backend::Sqlite).await;
    // A server allowed 64 descriptors, of which the database, listeners and
    // runtime take some twenty.
    let mut child = server_command(&db, &["prlimit", "--nofile=64", "--"])
        .spawn()
        .expect("start the latchkey binary");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server exited"
        );
        if line.contains("latchkey listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});

    // More connections than it has descriptors: the kernel completes them,
    // and each accept past the limit fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu(child.id());
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = cpu(child.id()) - before;
    // Clock ticks are hundredths of a second: a spinning loop takes ~300.
    let share = ticks as f64 / (window.elapsed().as_secs_f64() * 100.0);
    eprintln!(
        "CPU while out of descriptors: {:.0}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.3,
        "accepting spun at {:.0}% of a core",
        share * 100.0
    );

    // Descriptors back, it serves again.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
            && let Ok((mut client, connection)) = h2::client::handshake(tcp).await
        {
            tokio::spawn(connection);
            if let Ok((response, mut stream)) =
                open_call(&mut client, addr, "/grpc.health.v1.Health/Check").await
            {
                stream.send_data(vec![0, 0, 0, 0, 0].into(), true).unwrap();
                if grpc_status(response).await.as_deref() == Some("0") {
                    served = true;
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "not served once descriptors were free again");
}
