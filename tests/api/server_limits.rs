//! What one client may take of the server: connections, calls open on one
//! connection, time per call, header size. Past each limit that client is
//! held back or refused, and everyone else keeps being served.

use std::time::{Duration, Instant};

use latchkey::grpc::pb::token_verify_client::TokenVerifyClient;
use latchkey::grpc::pb::{Verdict, VerifyRequest};
use raw::*;

use crate::helpers::*;

/// A raw HTTP/2 client, to do what well-behaved gRPC clients never do:
/// open calls and never send their request.
mod raw {
    use std::net::SocketAddr;

    use tokio::net::TcpStream;

    pub struct RawClient {
        pub client: h2::client::SendRequest<bytes::Bytes>,
        pub addr: SocketAddr,
    }

    pub async fn connect(addr: SocketAddr) -> Result<RawClient, h2::Error> {
        let tcp = TcpStream::connect(addr).await.expect("TCP connects");
        let (client, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        Ok(RawClient { client, addr })
    }

    impl RawClient {
        /// Starts a Verify call and sends no request message: the call stays
        /// open, waiting, until the server gives up on it.
        pub async fn open_silent_call(
            &mut self,
        ) -> Result<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>), h2::Error> {
            let mut client = self.client.clone().ready().await?;
            let request = http::Request::post(format!(
                "http://{}/latchkey.v1.TokenVerify/Verify",
                self.addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
            client.send_request(request, false)
        }

        /// Starts a Verify call and sends its whole request.
        pub async fn call_verify(
            &mut self,
            request: &latchkey::grpc::pb::VerifyRequest,
        ) -> Result<h2::client::ResponseFuture, h2::Error> {
            let (response, mut stream) = self.open_silent_call().await?;
            let message = prost::Message::encode_to_vec(request);
            let mut frame = vec![0u8];
            frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&message);
            stream.send_data(frame.into(), true)?;
            Ok(response)
        }
    }

    /// The grpc-status of a response that ends at its headers (an
    /// immediate refusal) or in its trailers.
    pub async fn grpc_status(response: h2::client::ResponseFuture) -> Option<String> {
        let response = response.await.ok()?;
        if let Some(status) = response.headers().get("grpc-status") {
            return Some(status.to_str().unwrap().to_owned());
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.ok()?;
        }
        let trailers = body.trailers().await.ok()??;
        Some(trailers.get("grpc-status")?.to_str().unwrap().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_its_stream_limit_and_a_busy_client_waits_instead_of_failing() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_concurrent_streams = 8;
        s.server.request_timeout = Duration::from_secs(30);
    })
    .await;
    let (_, secret) = app.create_token("alice", &["read"]).await;

    // One client opens eight calls and never sends them: a ninth, sent in
    // full, is not taken up until one of the eight ends. A first complete
    // call makes sure the client has the server's settings (and so its
    // stream limit) before the hold starts; until then an HTTP/2 client
    // may open more streams than the server allows, and the server
    // resets the extra ones.
    let mut hog = connect(app.addr).await.unwrap();
    let request = VerifyRequest {
        token: secret.clone(),
        required_scopes: vec!["read".into()],
        cost: None,
        client: None,
    };
    let first = grpc_status(hog.call_verify(&request).await.unwrap()).await;
    assert_eq!(first.as_deref(), Some("0"), "OK");
    assert_eq!(hog.client.current_max_send_streams(), 8);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(hog.open_silent_call().await.unwrap());
    }
    let ninth = tokio::spawn(grpc_status(hog.call_verify(&request).await.unwrap()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    if ninth.is_finished() {
        panic!(
            "a ninth call was answered past the limit: grpc-status {:?}",
            ninth.await.unwrap()
        );
    }
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), ninth)
        .await
        .expect("the ninth call is served once a stream is free")
        .unwrap();
    assert_eq!(status.as_deref(), Some("0"), "OK");

    // Everyone else is served meanwhile, and a client sending many more
    // calls than the limit on one channel gets every answer: its calls
    // wait for a free stream, none is refused.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut client = app.verifier.clone();
        let request = VerifyRequest {
            token: secret.clone(),
            required_scopes: vec!["read".into()],
            cost: None,
            client: None,
        };
        calls.spawn(async move { client.verify(request).await.map(|r| r.into_inner().verdict) });
    }
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().expect("Verify"), Verdict::Valid as i32);
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_sends_its_request_is_cancelled_at_the_request_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.request_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = connect(app.addr).await.unwrap();
    let started = Instant::now();
    let (response, _stream) = slow.open_silent_call().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), grpc_status(response))
        .await
        .expect("the server gives up on the call");
    assert_eq!(status.as_deref(), Some("1"), "CANCELLED");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_a_freed_place_is_reused() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_connections = 3).await;
    let (_, secret) = app.create_token("alice", &["read"]).await;
    // The test's own client holds one place; two more clients fill the rest.
    let first = connect(app.addr).await.expect("second connection");
    let second = connect(app.addr).await.expect("third connection");

    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        match connect(app.addr).await {
            Err(_) => true,
            Ok(mut extra) => match extra.open_silent_call().await {
                Err(_) => true,
                Ok((response, _)) => response.await.is_err(),
            },
        }
    })
    .await
    .expect("the fourth connection is closed at once");
    assert!(refused, "a fourth connection was served");
    // The connected client is served throughout.
    app.verify(&secret, &["read"]).await;

    // A closed connection frees its place for a new client.
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_a_newcomer_is_served(&app, &secret).await;
}

/// A client on a new connection is served `secret` as VALID.
async fn assert_a_newcomer_is_served(app: &TestApp, secret: &str) {
    let mut newcomer = verify_client(app.addr).await;
    let reply = newcomer
        .verify(verify_request(secret))
        .await
        .expect("served");
    assert_eq!(reply.into_inner().verdict, Verdict::Valid as i32);
}

async fn verify_client(addr: std::net::SocketAddr) -> TokenVerifyClient<tonic::transport::Channel> {
    TokenVerifyClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

fn verify_request(secret: &str) -> tonic::Request<VerifyRequest> {
    tonic::Request::new(VerifyRequest {
        token: secret.to_owned(),
        required_scopes: vec!["read".into()],
        cost: None,
        client: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_is_refused_and_the_server_keeps_serving() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.max_header_bytes = 4096).await;
    let (_, secret) = app.create_token("alice", &["read"]).await;
    let padded = |bytes: usize| {
        let mut request = verify_request(&secret);
        request
            .metadata_mut()
            .insert("x-padding", "a".repeat(bytes).parse().unwrap());
        request
    };
    let mut client = verify_client(app.addr).await;
    assert!(
        client.verify(padded(2 * 1024)).await.is_ok(),
        "2 KiB of headers is fine"
    );
    assert!(
        client.verify(padded(8 * 1024)).await.is_err(),
        "8 KiB of headers was accepted"
    );
    app.verify(&secret, &["read"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_disconnected_and_its_place_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_connections = 2;
        s.server.keepalive_interval = Duration::from_millis(200);
        s.server.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let (_, secret) = app.create_token("alice", &["read"]).await;

    // A peer that opens an HTTP/2 connection (preface and an empty SETTINGS
    // frame) and then goes silent, as a crashed client or a dropped network
    // path does: it never answers the server's pings.
    let mut dead = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    dead.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 1024];
        loop {
            match dead.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent peer's connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Its place is free again: with the test's own client holding the other
    // one, a newcomer is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_a_newcomer_is_served(&app, &secret).await;
}
