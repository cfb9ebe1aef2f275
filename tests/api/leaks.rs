//! When a token leaks: GitHub's secret-scanning partner endpoint (signed
//! reports) and public revocation, on the HTTP listener.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

use latchkey::grpc::pb;
use latchkey::token::Prefix;
use latchkey::token::format::generate;
use latchkey::web::GithubPublicKey;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_signed_report_revokes_the_tokens_found_and_labels_each,
    a_report_without_a_good_signature_revokes_nothing,
    public_revocation_answers_202_for_anything_and_revokes_only_live_tokens,
    public_revocation_is_limited_per_client_address,
);

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A P-256 key of the test's own, as GitHub holds its signing key.
fn signing_key() -> SigningKey {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    SigningKey::from_slice(&bytes).unwrap()
}

fn public_pem(key: &SigningKey) -> String {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn sign(key: &SigningKey, body: &[u8]) -> String {
    let signature: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

async fn spawn_with_key(backend: Backend, key: &SigningKey) -> TestApp {
    let pem = public_pem(key);
    spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.leaks.github_public_keys = vec![GithubPublicKey {
            key_identifier: "key-1".into(),
            key: pem,
        }];
    })
    .await
}

async fn report(app: &TestApp, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    http_request(app.http_addr.unwrap(), "POST", "/leaks/github", &all, body).await
}

/// A token of latchkey's format that was never issued.
fn never_issued() -> String {
    generate(&Prefix::new("lk").unwrap())
        .unwrap()
        .expose()
        .to_owned()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

async fn a_signed_report_revokes_the_tokens_found_and_labels_each(backend: Backend) {
    let key = signing_key();
    let app = spawn_with_key(backend, &key).await;
    let (live, live_secret) = app.create_token("alice", &["repo:read"]).await;
    let (revoked, revoked_secret) = app.create_token("alice", &["repo:read"]).await;
    app.revoke(&revoked.id, "rotated").await.unwrap();
    let unknown = never_issued();
    let url = "https://github.com/octo/app/blob/0123abc/config.yml";
    let body = serde_json::json!([
        {"token": live_secret, "type": "latchkey_token", "url": url, "source": "content"},
        {"token": revoked_secret, "type": "latchkey_token", "url": url, "source": "commit"},
        {"token": unknown, "type": "latchkey_token", "url": url, "source": "content"},
        {"token": "lk_not-a-token", "type": "latchkey_token", "url": url, "source": "content",
         "field GitHub may add": true},
    ])
    .to_string();
    let signature = sign(&key, body.as_bytes());
    let headers = [
        ("Github-Public-Key-Identifier", "key-1"),
        ("Github-Public-Key-Signature", signature.as_str()),
    ];
    let answer = report(&app, &headers, body.as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let labels: Vec<(String, String)> = answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["token_type"], "latchkey_token");
            (
                l["token_hash"].as_str().unwrap().to_owned(),
                l["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            (sha256_hex(&live_secret), "true_positive".to_owned()),
            (sha256_hex(&revoked_secret), "true_positive".to_owned()),
            (sha256_hex(&unknown), "false_positive".to_owned()),
            (sha256_hex("lk_not-a-token"), "false_positive".to_owned()),
        ]
    );
    assert!(
        !answer.body.contains(&live_secret),
        "the answer echoes no secret"
    );

    // The live token is revoked at once, on this replica's cache too.
    assert_eq!(
        app.verify(&live_secret, &[]).await.verdict(),
        pb::Verdict::Revoked
    );
    let token = app.get(&live.id).await.unwrap();
    assert_eq!(token.revoke_reason, format!("leaked: {url}"));
    let events = app.events(&live.id, "").await;
    assert_eq!(events[0].kind(), pb::EventKind::Leaked);
    assert_eq!(events[0].actor, "system");
    assert_eq!(events[0].detail["url"], url);
    assert_eq!(events[0].detail["source"], "content");
    // The token revoked before keeps its reason and gets no event.
    assert_eq!(app.get(&revoked.id).await.unwrap().revoke_reason, "rotated");
    assert_eq!(
        app.event_kinds(&revoked.id).await,
        [pb::EventKind::Created, pb::EventKind::Revoked]
    );

    // Replayed, the report changes nothing and answers the same.
    let again = report(&app, &headers, body.as_bytes()).await;
    assert_eq!((again.status, again.json()), (200, answer.json()));
    assert_eq!(app.events(&live.id, "").await.len(), events.len());
}

async fn a_report_without_a_good_signature_revokes_nothing(backend: Backend) {
    let key = signing_key();
    let app = spawn_with_key(backend, &key).await;
    let (token, secret) = app.create_token("alice", &["repo:read"]).await;
    let body = serde_json::json!([
        {"token": secret, "type": "latchkey_token", "url": "https://x", "source": "content"},
    ])
    .to_string();
    let good = sign(&key, body.as_bytes());
    let forged = sign(&signing_key(), body.as_bytes());
    let altered = body.replace("https://x", "https://y");
    for (case, headers, body) in [
        ("no signature", vec![], body.clone()),
        (
            "no key id",
            vec![("Github-Public-Key-Signature", good.as_str())],
            body.clone(),
        ),
        (
            "unknown key id",
            vec![
                ("Github-Public-Key-Identifier", "key-2"),
                ("Github-Public-Key-Signature", &good),
            ],
            body.clone(),
        ),
        (
            "signed by another key",
            vec![
                ("Github-Public-Key-Identifier", "key-1"),
                ("Github-Public-Key-Signature", &forged),
            ],
            body.clone(),
        ),
        (
            "body altered after signing",
            vec![
                ("Github-Public-Key-Identifier", "key-1"),
                ("Github-Public-Key-Signature", &good),
            ],
            altered,
        ),
        (
            "signature not base64",
            vec![
                ("Github-Public-Key-Identifier", "key-1"),
                ("Github-Public-Key-Signature", "%%%"),
            ],
            body.clone(),
        ),
        (
            "signature not DER",
            vec![
                ("Github-Public-Key-Identifier", "key-1"),
                ("Github-Public-Key-Signature", "AAAA"),
            ],
            body.clone(),
        ),
    ] {
        let answer = report(&app, &headers, body.as_bytes()).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_signature", "{case}");
        assert!(!answer.body.contains(&secret), "{case}");
    }
    // Signed, but not a report: refused naming the body.
    let not_a_report = br#"{"token": "x"}"#;
    let signature = sign(&key, not_a_report);
    let answer = report(
        &app,
        &[
            ("Github-Public-Key-Identifier", "key-1"),
            ("Github-Public-Key-Signature", &signature),
        ],
        not_a_report,
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("body:")
    );

    assert_eq!(app.verify(&secret, &[]).await.verdict(), pb::Verdict::Valid);
    assert_eq!(app.event_kinds(&token.id).await, [pb::EventKind::Created]);
}

async fn revoke_publicly(app: &TestApp, body: &[u8]) -> HttpAnswer {
    http_request(
        app.http_addr.unwrap(),
        "POST",
        "/v1/tokens/revoke",
        &[JSON],
        body,
    )
    .await
}

async fn public_revocation_answers_202_for_anything_and_revokes_only_live_tokens(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (live, live_secret) = app.create_token("alice", &["repo:read"]).await;
    let (revoked, revoked_secret) = app.create_token("alice", &["repo:read"]).await;
    app.revoke(&revoked.id, "rotated").await.unwrap();
    let (other, other_secret) = app.create_token("bob", &[]).await;
    let body = serde_json::json!({"tokens": [
        live_secret, revoked_secret, never_issued(), "garbage", "", "lk_\u{0}\u{7}",
        "x".repeat(2_000),
    ]})
    .to_string();
    let answer = revoke_publicly(&app, body.as_bytes()).await;
    assert_eq!((answer.status, answer.json()), (202, serde_json::json!({})));
    assert_eq!(
        app.verify(&live_secret, &[]).await.verdict(),
        pb::Verdict::Revoked
    );
    let events = app.events(&live.id, "").await;
    assert_eq!(events[0].kind(), pb::EventKind::Leaked);
    assert_eq!(events[0].detail["source"], "public");
    assert_eq!(
        app.get(&live.id).await.unwrap().revoke_reason,
        "leaked: public"
    );
    assert_eq!(
        app.event_kinds(&revoked.id).await,
        [pb::EventKind::Created, pb::EventKind::Revoked]
    );
    assert_eq!(
        app.verify(&other_secret, &[]).await.verdict(),
        pb::Verdict::Valid
    );
    assert_eq!(app.event_kinds(&other.id).await, [pb::EventKind::Created]);

    // Replayed: the same answer, nothing written.
    let again = revoke_publicly(&app, body.as_bytes()).await;
    assert_eq!(again.status, 202);
    assert_eq!(app.events(&live.id, "").await.len(), events.len());

    // A request that is not a revocation is refused naming the field, and
    // revokes nothing.
    let too_many = serde_json::json!({"tokens": vec![other_secret.clone(); 1_001]}).to_string();
    for (case, body, status) in [
        ("not JSON", b"tokens=x".to_vec(), 400),
        ("no tokens", br#"{"token": ["x"]}"#.to_vec(), 400),
        ("not strings", br#"{"tokens": [1, 2]}"#.to_vec(), 400),
        ("over 1,000", too_many.into_bytes(), 400),
        ("over 64 KiB", vec![b' '; 70_000], 413),
    ] {
        let answer = revoke_publicly(&app, &body).await;
        assert_eq!(answer.status, status, "{case}: {}", answer.body);
        if status == 400 {
            assert!(
                answer.json()["error_description"]
                    .as_str()
                    .unwrap()
                    .starts_with("tokens:"),
                "{case}: {}",
                answer.body
            );
        }
    }
    let get = http_request(app.http_addr.unwrap(), "GET", "/v1/tokens/revoke", &[], b"").await;
    assert_eq!(get.status, 405);
    assert_eq!(
        app.verify(&other_secret, &[]).await.verdict(),
        pb::Verdict::Valid
    );
}

async fn public_revocation_is_limited_per_client_address(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.leaks.revocations_per_minute = 3;
    })
    .await;
    let (_, secret) = app.create_token("alice", &[]).await;
    let body = br#"{"tokens": ["garbage"]}"#;
    for _ in 0..3 {
        assert_eq!(revoke_publicly(&app, body).await.status, 202);
    }
    let refused = revoke_publicly(
        &app,
        serde_json::json!({"tokens": [secret]})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Refused before it was read: the token it named still works.
    assert_eq!(app.verify(&secret, &[]).await.verdict(), pb::Verdict::Valid);
}
