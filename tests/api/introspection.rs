//! RFC 7662 token introspection on the HTTP listener, driven with the
//! request shape of RFC 7662 2.1.

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::grpc::pb;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    an_active_token_is_described_with_the_rfc_fields,
    every_token_that_is_not_valid_is_exactly_inactive,
    the_caller_needs_a_valid_token_with_the_introspect_scope,
    a_request_that_is_not_an_introspection_is_refused,
);

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// A resource server's credential: a token with scope latchkey:introspect.
pub(crate) async fn resource_server(app: &TestApp) -> String {
    app.create_token("api-gateway", &["latchkey:introspect"])
        .await
        .1
}

/// RFC 7662 2.1's example request, with `caller` as the bearer credential.
pub(crate) async fn introspect(app: &TestApp, caller: &str, token: &str) -> HttpAnswer {
    let authorization = format!("Bearer {caller}");
    http_request(
        app.http_addr.unwrap(),
        "POST",
        "/oauth2/introspect",
        &[
            ("Accept", "application/json"),
            FORM,
            ("Authorization", &authorization),
        ],
        format!("token={token}&token_type_hint=access_token").as_bytes(),
    )
    .await
}

async fn an_active_token_is_described_with_the_rfc_fields(backend: Backend) {
    let app = spawn(backend).await;
    let caller = resource_server(&app).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "alice".into(),
            name: "ci".into(),
            scopes: vec!["repo:read".into(), "deploy:*".into()],
            metadata: BTreeMap::from([("team".into(), "infra".into())]),
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(3600))),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = created.token.unwrap();

    let answer = introspect(&app, &caller, &created.secret).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "active": true,
            "scope": "repo:read deploy:*",
            "client_id": token.id,
            "sub": "alice",
            "iat": token.create_time.unwrap().seconds,
            "exp": token.expire_time.unwrap().seconds,
            "token_type": "Bearer",
            "jti": token.id,
        })
    );
    // A token that never expires has no `exp`.
    let (_, forever) = app.create_token("bob", &[]).await;
    let answer = introspect(&app, &caller, &forever).await.json();
    assert_eq!(answer["active"], true);
    assert!(answer.get("exp").is_none(), "{answer}");
    // A token sent percent-encoded, every byte of it, reads as itself.
    let encoded: String = forever.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(introspect(&app, &caller, &encoded).await.json(), answer);
}

async fn every_token_that_is_not_valid_is_exactly_inactive(backend: Backend) {
    let app = spawn(backend).await;
    let caller = resource_server(&app).await;
    let (revoked, revoked_secret) = app.create_token("alice", &["repo:read"]).await;
    app.revoke(&revoked.id, "leaked").await.unwrap();
    let expiring = app.create_with_ttl("alice", 60).await;
    let (_, disabled_secret) = app.create_token("mallory", &[]).await;
    app.disable_owner("mallory", "fired").await.unwrap();
    let (_, valid) = app.create_token("carol", &[]).await;
    // A deleted token is well-formed and unknown.
    let (deleted, deleted_secret) = app.create_token("dave", &[]).await;
    app.delete(&deleted.id).await.unwrap();
    app.clock.advance(Duration::from_secs(61));

    for (what, token) in [
        ("revoked", revoked_secret.as_str()),
        ("expired", expiring.secret.as_str()),
        ("owner disabled", disabled_secret.as_str()),
        ("deleted", deleted_secret.as_str()),
        ("malformed", "lk_notatoken"),
        ("another kind of token", "2YotnFZFEjr1zCsicMWpAA"),
        ("a typo", &valid[..valid.len() - 1]),
    ] {
        let answer = introspect(&app, &caller, token).await;
        assert_eq!(answer.status, 200, "{what}: {answer:?}");
        assert_eq!(answer.body, r#"{"active":false}"#, "{what}");
    }
    // Caller and introspected tokens are judged on their own: the valid
    // one still is.
    assert_eq!(
        introspect(&app, &caller, &valid).await.json()["active"],
        true
    );
}

async fn the_caller_needs_a_valid_token_with_the_introspect_scope(backend: Backend) {
    let app = spawn(backend).await;
    let (_, token) = app.create_token("alice", &["repo:read"]).await;

    // No credential: a bare challenge (RFC 6750 3.1).
    let answer = http_request(
        app.http_addr.unwrap(),
        "POST",
        "/oauth2/introspect",
        &[FORM],
        format!("token={token}").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.headers["www-authenticate"],
        "Bearer realm=\"latchkey\""
    );

    // A valid token without the scope, e.g. the introspected token itself.
    let answer = introspect(&app, &token, &token).await;
    assert_eq!(answer.status, 403);
    assert!(answer.headers["www-authenticate"].contains("error=\"insufficient_scope\""));
    assert_eq!(answer.json()["error"], "insufficient_scope");

    // A caller token that is malformed, or was revoked.
    let answer = introspect(&app, "lk_garbage", &token).await;
    assert_eq!(answer.status, 401);
    assert!(answer.headers["www-authenticate"].contains("error=\"invalid_token\""));
    let (caller, caller_secret) = app
        .create_token("api-gateway", &["latchkey:introspect"])
        .await;
    assert_eq!(introspect(&app, &caller_secret, &token).await.status, 200);
    app.revoke(&caller.id, "rotated").await.unwrap();
    assert_eq!(introspect(&app, &caller_secret, &token).await.status, 401);
    // Neither answer said anything about the introspected token.
    assert!(!answer.body.contains("active"));
}

async fn a_request_that_is_not_an_introspection_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let caller = resource_server(&app).await;
    let (_, token) = app.create_token("alice", &[]).await;
    let addr = app.http_addr.unwrap();
    let bearer = format!("Bearer {caller}");
    let auth = ("Authorization", bearer.as_str());

    let missing = http_request(addr, "POST", "/oauth2/introspect", &[FORM, auth], b"").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"], "invalid_request");
    let twice = format!("token={token}&token={token}");
    let answer = http_request(
        addr,
        "POST",
        "/oauth2/introspect",
        &[FORM, auth],
        twice.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 400);
    let json_body = serde_json::json!({ "token": token }).to_string();
    let answer = http_request(
        addr,
        "POST",
        "/oauth2/introspect",
        &[("Content-Type", "application/json"), auth],
        json_body.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(!answer.body.contains(&token), "an error echoed the token");

    let answer = http_request(addr, "GET", "/oauth2/introspect", &[auth], b"").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST");
    let answer = http_request(addr, "POST", "/oauth2/token", &[FORM, auth], b"").await;
    assert_eq!(answer.status, 404);
    let huge = format!("token={token}&pad={}", "a".repeat(70 * 1024));
    let answer = http_request(
        addr,
        "POST",
        "/oauth2/introspect",
        &[FORM, auth],
        huge.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 413);
}

#[tokio::test]
async fn the_http_listener_is_off_unless_configured() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(app.http_addr, None);
    assert!(app.settings.http_addr.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_answered_at_the_request_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.server.request_timeout = Duration::from_millis(500);
    })
    .await;
    let caller = format!("Bearer {}", resource_server(&app).await);
    for path in [
        "/oauth2/introspect",
        "/apis/authentication.k8s.io/v1/tokenreviews",
    ] {
        let mut request = http_request_bytes(
            "POST",
            path,
            &[FORM, ("Authorization", &caller)],
            &[b'x'; 100],
        );
        // The head and a few bytes of the announced body, then nothing.
        request.truncate(request.len() - 90);
        let mut stream = tokio::net::TcpStream::connect(app.http_addr.unwrap())
            .await
            .unwrap();
        stream.write_all(&request).await.unwrap();
        let started = std::time::Instant::now();
        let mut raw = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut raw))
            .await
            .expect("answered before the test's own limit")
            .unwrap();
        raw.truncate(n);
        let answer = parse_http_answer(raw);
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.json()["error"], "temporarily_unavailable", "{path}");
        assert!(started.elapsed() >= Duration::from_millis(400), "{path}");
    }
}
