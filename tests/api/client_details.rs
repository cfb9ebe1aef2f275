//! Where a token was used from: the client a Verify names, or the one an
//! Envoy CheckRequest carries, noted as the token's last use and its recent
//! addresses, written behind with the last-use time.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use tonic::Code;

use latchkey::grpc::pb;

use crate::console::token_page;
use crate::ext_authz::{check, check_request};
use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    verify_notes_the_latest_client_and_five_distinct_addresses,
    a_client_that_does_not_read_is_refused_naming_the_field,
    a_check_notes_the_client_envoy_saw,
    the_console_shows_where_a_token_was_used_from,
);

async fn verify_from(
    app: &TestApp,
    secret: &str,
    ip: &str,
    user_agent: &str,
) -> Result<pb::VerifyResponse, tonic::Status> {
    app.verifier
        .clone()
        .verify(pb::VerifyRequest {
            token: secret.to_owned(),
            required_scopes: vec![],
            cost: None,
            client: Some(pb::Client {
                ip: ip.to_owned(),
                user_agent: user_agent.to_owned(),
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Polls GetToken until `done` holds of it (the flusher writes behind,
/// every 100 ms in tests).
async fn token_when(app: &TestApp, id: &str, done: impl Fn(&pb::Token) -> bool) -> pb::Token {
    for _ in 0..100 {
        let token = app.get(id).await.expect("GetToken");
        if done(&token) {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "token {id} never showed the uses expected: {:?}",
        app.get(id).await
    );
}

async fn verify_notes_the_latest_client_and_five_distinct_addresses(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("alice", &[]).await;
    for (ip, agent) in [
        ("192.0.2.1", "app/1"),
        ("192.0.2.2", "app/1"),
        ("192.0.2.1", "app/1"),
        ("2001:db8::3", "app/1"),
        ("192.0.2.4", "app/1"),
        ("192.0.2.5", "app/1"),
        ("192.0.2.6", "app/2 (Linux; é)"),
    ] {
        let answer = verify_from(&app, &secret, ip, agent).await.unwrap();
        assert_eq!(answer.verdict(), pb::Verdict::Valid);
    }
    // The flusher may write the calls over several flushes.
    let shown = token_when(&app, &token.id, |t| t.last_used_ip == "192.0.2.6").await;
    assert_eq!(shown.last_used_ip, "192.0.2.6");
    assert_eq!(shown.last_used_user_agent, "app/2 (Linux; é)");
    assert_eq!(
        shown.recent_ips,
        [
            "192.0.2.6",
            "192.0.2.5",
            "192.0.2.4",
            "2001:db8::3",
            "192.0.2.1"
        ]
    );

    // A later flush puts its addresses first, ahead of what was stored; a
    // call naming no client leaves the last client as it was.
    app.clock.advance(Duration::from_secs(1));
    verify_from(&app, &secret, "192.0.2.2", "").await.unwrap();
    let shown = token_when(&app, &token.id, |t| t.recent_ips[0] == "192.0.2.2").await;
    assert_eq!(
        (
            shown.last_used_ip.as_str(),
            shown.last_used_user_agent.as_str()
        ),
        ("192.0.2.2", "")
    );
    assert_eq!(
        shown.recent_ips,
        [
            "192.0.2.2",
            "192.0.2.6",
            "192.0.2.5",
            "192.0.2.4",
            "2001:db8::3"
        ]
    );
    let before = shown.last_used_time;
    app.clock.advance(Duration::from_secs(1));
    app.verify(&secret, &[]).await;
    app.wait_for_last_used(&token.id, before).await;
    let shown = app.get(&token.id).await.unwrap();
    assert_eq!(shown.last_used_ip, "192.0.2.2");
    // The CLI shows them.
    let got = run_client(&app, &["token", "get", &token.id], b"").await;
    let lines: Vec<&str> = got.ok().lines().collect();
    let row = |label: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(label))
            .map(|l| l[label.len()..].trim().to_owned())
    };
    assert_eq!(row("Last used from:").as_deref(), Some("192.0.2.2"));
    assert_eq!(
        row("Recent addresses:").as_deref(),
        Some("192.0.2.2, 192.0.2.6, 192.0.2.5, 192.0.2.4, 2001:db8::3")
    );

    // A refused token's call is no use of it: nothing noted.
    let (revoked, revoked_secret) = app.create_token("alice", &[]).await;
    app.revoke(&revoked.id, "gone").await.unwrap();
    let answer = verify_from(&app, &revoked_secret, "192.0.2.9", "x")
        .await
        .unwrap();
    assert_eq!(answer.verdict(), pb::Verdict::Revoked);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let shown = app.get(&revoked.id).await.unwrap();
    assert!(
        shown.recent_ips.is_empty() && shown.last_used_ip.is_empty(),
        "{shown:?}"
    );
}

async fn a_client_that_does_not_read_is_refused_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("alice", &[]).await;
    for (ip, agent, field) in [
        ("192.0.2", "", "client.ip"),
        ("192.0.2.1:80", "", "client.ip"),
        ("localhost", "", "client.ip"),
        ("192.0.2.1", "app\r\nX-Injected: 1", "client.user_agent"),
        ("192.0.2.1", "\u{0}", "client.user_agent"),
        ("192.0.2.1", &"u".repeat(513), "client.user_agent"),
    ] {
        let status = verify_from(&app, &secret, ip, agent).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{ip:?} {agent:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    // Refused before the token was looked at: no use noted.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let shown = app.get(&token.id).await.unwrap();
    assert_eq!(shown.last_used_time, None);
    assert!(shown.recent_ips.is_empty());
    // 512 bytes is the most.
    let most = "u".repeat(512);
    assert!(verify_from(&app, &secret, "", &most).await.is_ok());
    let shown = token_when(&app, &token.id, |t| !t.last_used_user_agent.is_empty()).await;
    assert_eq!(
        (
            shown.last_used_ip.as_str(),
            shown.last_used_user_agent.len()
        ),
        ("", 512)
    );
}

async fn a_check_notes_the_client_envoy_saw(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("alice", &[]).await;
    check_from(&app, &secret, "198.51.100.7", "203.0.113.1, 10.0.0.1").await;
    let shown = token_when(&app, &token.id, |t| !t.recent_ips.is_empty()).await;
    // Not from x-forwarded-for unless told to trust it.
    assert_eq!(shown.last_used_ip, "198.51.100.7");
    assert_eq!(shown.recent_ips, ["198.51.100.7"]);
    assert!(shown.last_used_user_agent.starts_with("Mozilla/5.0 xxx"));
    assert_eq!(shown.last_used_user_agent.len(), 512);

    // Told to trust it, its first entry.
    let app = spawn_app_with(app.stop().await.0.backend, |s| {
        s.ext_authz.trust_forwarded_for = true;
    })
    .await;
    let (token, secret) = app.create_token("alice", &[]).await;
    check_from(&app, &secret, "198.51.100.7", "203.0.113.1, 10.0.0.1").await;
    let shown = token_when(&app, &token.id, |t| !t.recent_ips.is_empty()).await;
    assert_eq!(shown.recent_ips, ["203.0.113.1"]);
}

/// An allowed Check of `secret` from `source`, with an over-long user agent
/// holding a control character, and `forwarded_for`.
async fn check_from(app: &TestApp, secret: &str, source: &str, forwarded_for: &str) {
    let bearer = format!("Bearer {secret}");
    let mut request = check_request(Some(&bearer), None);
    let attributes = request.attributes.as_mut().unwrap();
    attributes.source = Some(Peer {
        address: Some(EnvoyAddress {
            address: Some(Address::SocketAddress(SocketAddress {
                address: source.to_owned(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    let headers = &mut attributes
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .headers;
    // An end user chose this: cut and cleaned, never refused.
    headers.insert(
        "user-agent".to_owned(),
        format!("Mozilla/5.0\u{7} {}", "x".repeat(600)),
    );
    headers.insert("x-forwarded-for".to_owned(), forwarded_for.to_owned());
    let answer = check(app, request).await.unwrap();
    assert_eq!(answer.status.unwrap().code, 0);
}

async fn the_console_shows_where_a_token_was_used_from(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (token, secret) = app.create_token("alice", &[]).await;
    verify_from(&app, &secret, "192.0.2.1", "app/1")
        .await
        .unwrap();
    verify_from(&app, &secret, "2001:db8::7", "<b>agent</b>")
        .await
        .unwrap();
    token_when(&app, &token.id, |t| t.recent_ips.len() == 2).await;
    let page = token_page(&app, &token.id).await;
    assert!(
        page.body
            .contains("<dt>Last used from</dt><dd><code>2001:db8::7</code>"),
        "{}",
        page.body
    );
    let agent = page
        .body
        .split("class=\"agent\">")
        .nth(1)
        .unwrap_or_default();
    assert!(
        agent.starts_with("&#60;b&#62;agent&#60;/b&#62;</span>"),
        "escaped: {agent}"
    );
    assert!(page.body.contains("<dd>2001:db8::7, 192.0.2.1</dd>"));
}
