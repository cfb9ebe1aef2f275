//! A silent partition between one replica and PostgreSQL: packets stop in
//! both directions and no connection is reset (a network policy change, a
//! dead node, a failover behind a stale address). Played with a TCP proxy
//! that stops passing bytes, holding them, and passes them again when the
//! partition heals, as TCP retransmission would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::grpc::pb::Verdict;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;

use crate::helpers::*;

/// Forwards connections to `upstream`; while partitioned, passes nothing.
struct Proxy {
    addr: SocketAddr,
    partitioned: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (partitioned, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, watching.clone()));
                tokio::spawn(pass(server_read, client_write, watching.clone()));
            }
        });
        Proxy { addr, partitioned }
    }

    fn partition(&self, on: bool) {
        self.partitioned.send_replace(on);
    }
}

/// Copies `from` to `to`, holding what it read while partitioned.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if partitioned.wait_for(|p| !p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if partitioned.wait_for(|p| !p).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
}

fn upstream(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_noticed_bounded_and_recovered_from() {
    if !postgres_available() {
        return;
    }
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let proxy = Proxy::start(upstream(&db.url)).await;
    let max_staleness = Duration::from_secs(2);
    let poll_interval = Duration::from_millis(250);
    let timeout = Duration::from_secs(1);
    let mut settings = test_settings(&db);
    settings.changes.max_staleness = max_staleness;
    settings.changes.poll_interval = poll_interval;
    settings.database_timeout = timeout;
    // Replica B reaches the database directly; replica A through the proxy.
    let b = spawn_app_on(Arc::clone(&db), settings.clone()).await;
    settings.database_url = through(&db.url, proxy.addr);
    let a = spawn_app_on(Arc::clone(&db), settings).await;

    let (token, secret) = b.create_token("alice", &[]).await;
    let (_, cold) = b.create_token("bob", &[]).await;
    assert_eq!(a.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(a.readiness().await, ServingStatus::Serving);

    proxy.partition(true);
    let partitioned = Instant::now();
    b.revoke(&token.id, "leaked").await.unwrap();

    // Every call to A ends within the database bound (plus scheduling),
    // never at the request timeout: answered from the cache while it is
    // trusted, UNAVAILABLE when it needs the database.
    let bound = timeout + Duration::from_millis(1_500);
    let mut left_serving = None;
    while partitioned.elapsed() < max_staleness + poll_interval + Duration::from_secs(3) {
        let asked = Instant::now();
        match a.try_verify(&secret, &[]).await {
            Ok(reply) => {
                assert_eq!(
                    reply.verdict(),
                    Verdict::Valid,
                    "stale but within the bound"
                );
                assert!(partitioned.elapsed() <= max_staleness + Duration::from_millis(300));
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(asked.elapsed() < bound, "Verify took {:?}", asked.elapsed());
        let asked = Instant::now();
        assert_code(a.try_verify(&cold, &[]).await, Code::Unavailable);
        assert!(asked.elapsed() < bound, "a miss took {:?}", asked.elapsed());
        let asked = Instant::now();
        assert_code(a.get(&token.id).await, Code::Unavailable);
        assert!(
            asked.elapsed() < bound,
            "GetToken took {:?}",
            asked.elapsed()
        );
        if left_serving.is_none() && a.readiness().await == ServingStatus::NotServing {
            left_serving = Some(partitioned.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left_serving = left_serving.expect("readiness stayed SERVING through the partition");
    eprintln!("readiness left SERVING {left_serving:?} into the partition");
    assert!(left_serving <= max_staleness + poll_interval + Duration::from_secs(1));
    assert!(left_serving >= max_staleness);

    // Healed: the revocation made meanwhile is answered within a second.
    proxy.partition(false);
    let healed = Instant::now();
    loop {
        if let Ok(reply) = a.try_verify(&secret, &[]).await
            && reply.verdict() == Verdict::Revoked
        {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(5), "not recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = healed.elapsed();
    eprintln!("REVOKED {recovered:?} after the partition healed");
    assert!(recovered < Duration::from_secs(1), "{recovered:?}");
    assert_eq!(a.verify(&cold, &[]).await.verdict(), Verdict::Valid);
    let back = Instant::now();
    while a.readiness().await != ServingStatus::Serving {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "readiness never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
