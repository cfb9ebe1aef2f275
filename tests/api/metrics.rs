//! Prometheus metrics: after traffic, `/metrics` shows the counters moved.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use latchkey::grpc::pb::Verdict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// `GET /metrics`, and the value of each sample by its full name.
pub async fn scrape(app: &TestApp) -> std::collections::HashMap<String, f64> {
    let mut stream = tokio::net::TcpStream::connect(app.metrics_addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: latchkey\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub fn value(samples: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_verdicts_calls_cache_and_lookups() {
    let app = spawn_app(Backend::Sqlite).await;
    let before = scrape(&app).await;
    assert_eq!(
        value(
            &before,
            r#"latchkey_verdicts_total{api="verify",verdict="valid"}"#
        ),
        0.0
    );

    let (token, secret) = app.create_token("u", &["read"]).await;
    for _ in 0..5 {
        assert_eq!(
            app.verify(&secret, &["read"]).await.verdict(),
            Verdict::Valid
        );
    }
    assert_eq!(
        app.verify(&secret, &["write"]).await.verdict(),
        Verdict::InsufficientScope
    );
    assert_eq!(
        app.verify("lk_nonsense", &[]).await.verdict(),
        Verdict::Malformed
    );
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    headers: [("authorization".to_owned(), format!("Bearer {secret}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    AuthorizationClient::new(app.channel.clone())
        .check(check)
        .await
        .unwrap();
    // A second replica on the same database revokes the token: this one
    // learns of it through the change log.
    let other = spawn_app_on(app.db.clone(), app.settings.clone()).await;
    other.revoke(&token.id, "leaked").await.unwrap();

    let started = Instant::now();
    let after = loop {
        let after = scrape(&app).await;
        let flushed = value(&after, "latchkey_last_used_flush_lag_seconds_count") >= 1.0;
        let invalidated = value(&after, "latchkey_invalidation_lag_seconds_count") >= 1.0;
        if flushed && invalidated {
            break after;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{after:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v = |name: &str| value(&after, name);
    assert_eq!(
        v(r#"latchkey_verdicts_total{api="verify",verdict="valid"}"#),
        5.0
    );
    assert_eq!(
        v(r#"latchkey_verdicts_total{api="verify",verdict="insufficient_scope"}"#),
        1.0
    );
    assert_eq!(
        v(r#"latchkey_verdicts_total{api="verify",verdict="malformed"}"#),
        1.0
    );
    assert_eq!(
        v(r#"latchkey_verdicts_total{api="check",verdict="valid"}"#),
        1.0
    );
    assert_eq!(v("latchkey_cache_misses_total"), 1.0);
    // Six Verify calls and one Check after the miss; admin calls by the
    // static credential do not verify a token.
    assert_eq!(v("latchkey_cache_hits_total"), 6.0);
    assert!(v("latchkey_cache_entries") >= 1.0);
    assert_eq!(v("latchkey_db_lookup_duration_seconds_count"), 1.0);
    assert_eq!(
        v(r#"latchkey_grpc_call_duration_seconds_count{method="/latchkey.v1.TokenVerify/Verify"}"#),
        7.0
    );
    assert_eq!(
        v(
            r#"latchkey_grpc_call_duration_seconds_count{method="/envoy.service.auth.v3.Authorization/Check"}"#
        ),
        1.0
    );
    assert!(
        v(
            r#"latchkey_grpc_call_duration_seconds_count{method="/latchkey.v1.TokenAdmin/CreateToken"}"#
        ) >= 1.0
    );
    assert_eq!(v("latchkey_db_lookup_errors_total"), 0.0);
}
