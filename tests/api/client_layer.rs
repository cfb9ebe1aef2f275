//! latchkey-client against a real latchkey: the example service's routes
//! behind `RequireToken`, a tonic service behind it, Verify's retries, and
//! the opt-in cache.

use std::time::Duration;

use latchkey_client::{Client, RequireToken};

use crate::helpers::*;
use crate::on_both_databases;

#[allow(dead_code)]
#[path = "../../crates/client/examples/protected_service.rs"]
mod example;

on_both_databases!(the_example_service_admits_by_token_and_scope);

/// The example service on a free port, calling latchkey at `app`.
async fn serve_example(app: &TestApp) -> std::net::SocketAddr {
    let latchkey = Client::builder(format!("http://{}", app.addr))
        .connect_lazy()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, example::app(latchkey)).await });
    addr
}

async fn get(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> HttpAnswer {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("Authorization", h.as_str()))
        .collect();
    http_request(addr, method, path, &headers, b"").await
}

async fn the_example_service_admits_by_token_and_scope(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let service = serve_example(&app).await;
    let (reader, read_secret) = app.create_token("carol", &["reports:read"]).await;
    let (_, all_secret) = app.create_token("dave", &["reports:*"]).await;

    // A valid token reaches the handler with its identity.
    let whoami = get(service, "GET", "/whoami", Some(&read_secret)).await;
    assert_eq!(whoami.status, 200, "{whoami:?}");
    assert_eq!(
        whoami.body,
        format!("owner=carol token={} name={}\n", reader.id, reader.name)
    );
    let reports = get(service, "GET", "/reports", Some(&read_secret)).await;
    assert_eq!(
        (reports.status, reports.body.as_str()),
        (200, "reports of carol\n")
    );

    // A missing scope: 403 naming the scope the route needs.
    let publish = get(service, "POST", "/reports/publish", Some(&read_secret)).await;
    assert_eq!(publish.status, 403, "{publish:?}");
    assert_eq!(
        publish.headers["www-authenticate"],
        r#"Bearer error="insufficient_scope", scope="reports:write""#
    );
    // A wildcard grant covers it.
    let publish = get(service, "POST", "/reports/publish", Some(&all_secret)).await;
    assert_eq!(
        (publish.status, publish.body.as_str()),
        (200, "published by dave\n")
    );

    // No token, another scheme, a malformed one: 401.
    for header in [None, Some("Basic YWxpY2U6c2VjcmV0")] {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", *h)).collect();
        let answer = http_request(service, "GET", "/whoami", &headers, b"").await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let malformed = get(service, "GET", "/whoami", Some("lk_notatoken")).await;
    assert_eq!(malformed.status, 401);
    assert!(malformed.headers["www-authenticate"].starts_with(r#"Bearer error="invalid_token""#));

    // Hostile headers: each refused as a bad token, none as an outage.
    let long = format!("lk_{}", "a".repeat(70_000));
    for (token, status) in [
        (long.as_str(), 401),
        ("lk_a\tb", 401),
        // HTTP itself refuses a control character in a header.
        ("\u{7f}", 400),
        (&read_secret[..read_secret.len() - 1], 401),
    ] {
        let answer = get(service, "GET", "/whoami", Some(token)).await;
        assert_eq!(answer.status, status, "{token:.20}: {answer:?}");
    }
    let replayed = get(service, "GET", "/whoami", Some(&read_secret)).await;
    assert_eq!(replayed.status, 200, "a token is reusable until revoked");

    // Revoked: 401 at once (no cache in the client by default).
    app.revoke(&reader.id, "lost").await.unwrap();
    let revoked = get(service, "GET", "/reports", Some(&read_secret)).await;
    assert_eq!(revoked.status, 401, "{revoked:?}");
    assert_eq!(
        revoked.headers["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="the token is revoked""#
    );

    // latchkey stopped: fail closed.
    app.shutdown().await.unwrap();
    let down = get(service, "GET", "/whoami", Some(&all_secret)).await;
    assert_eq!(down.status, 503, "{down:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_service_behind_the_layer_answers_with_grpc_statuses() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let app = spawn_app(Backend::Sqlite).await;
    let (_, secret) = app.create_token("erin", &["health:read"]).await;
    let (_, other) = app.create_token("erin", &["other"]).await;
    let latchkey = Client::builder(format!("http://{}", app.addr))
        .connect_lazy()
        .unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RequireToken::new(latchkey).scopes(["health:read"]))
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |token: Option<&str>| {
        let mut client = HealthClient::new(channel.clone());
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        async move {
            client
                .check(request)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(call(Some(&secret)).await, Ok(()));
    assert_eq!(call(None).await, Err(tonic::Code::Unauthenticated));
    assert_eq!(
        call(Some("lk_notatoken")).await,
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(call(Some(&other)).await, Err(tonic::Code::PermissionDenied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_retries_while_latchkey_is_starting() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let client = Client::builder(format!("http://{addr}"))
        .retries(10, Duration::from_millis(100))
        .connect_lazy()
        .unwrap();
    let waiting = tokio::spawn(async move { client.verify("lk_notatoken", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _app = spawn_app_with(Backend::Sqlite, |s| s.listen_addr = addr).await;
    let answer = waiting
        .await
        .unwrap()
        .expect("answered once latchkey was up");
    assert_eq!(answer.verdict(), latchkey_client::Verdict::Malformed);

    // Without retries, a server that is not there is an error naming it.
    let nobody = Client::builder("http://127.0.0.1:1")
        .retries(0, Duration::ZERO)
        .connect_lazy()
        .unwrap();
    let error = nobody.verify("lk_notatoken", &[]).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable);
    assert!(
        error
            .to_string()
            .starts_with("cannot reach latchkey at http://127.0.0.1:1"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_cache_trades_revocation_delay_and_is_bounded() {
    let app = spawn_app(Backend::Sqlite).await;
    let (token, secret) = app.create_token("frank", &[]).await;
    let too_long = Client::builder(format!("http://{}", app.addr))
        .cache(Duration::from_secs(30), 1_000)
        .connect_lazy();
    assert!(matches!(too_long, Err(latchkey_client::Error::Config(m)) if m.contains("revoked")));

    let cached = Client::builder(format!("http://{}", app.addr))
        .cache(Duration::from_secs(1), 1_000)
        .connect_lazy()
        .unwrap();
    let fresh = Client::builder(format!("http://{}", app.addr))
        .connect_lazy()
        .unwrap();
    let valid = latchkey_client::Verdict::Valid;
    assert_eq!(cached.verify(&secret, &[]).await.unwrap().verdict(), valid);
    app.revoke(&token.id, "leaked").await.unwrap();
    assert_eq!(
        fresh.verify(&secret, &[]).await.unwrap().verdict(),
        latchkey_client::Verdict::Revoked
    );
    // The cached answer outlives the revocation, for at most its TTL.
    assert_eq!(cached.verify(&secret, &[]).await.unwrap().verdict(), valid);
    let revoked_at = std::time::Instant::now();
    loop {
        if cached.verify(&secret, &[]).await.unwrap().verdict() != valid {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the cache kept the answer past its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
