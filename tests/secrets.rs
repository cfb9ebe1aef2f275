//! Secrets never reach a log: with every crate logging at TRACE (latchkey,
//! tonic, h2, hyper, sqlx, sea-orm), every RPC is called, with secrets in
//! the places they belong (credentials, Verify, Envoy's Authorization
//! header, TokenSelf, introspection and TokenReview on the HTTP listener)
//! and in places they do not (an id field, a scope), and the whole
//! log is searched for each secret, its random part, the static admin
//! credential and the HMAC key.
//!
//! A test binary of its own, so that its TRACE filter does not slow the
//! other integration tests.

#[path = "api/helpers/mod.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use latchkey::grpc::pb::{self, Verdict, token_self_client::TokenSelfClient};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use helpers::*;

on_both_databases!(no_rpc_logs_a_secret_or_the_admin_credential);

fn check_request(authorization: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/".to_owned(),
                    headers: HashMap::from([
                        (":method".to_owned(), "GET".to_owned()),
                        ("authorization".to_owned(), authorization.to_owned()),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// `secret` with its last character changed: well-formed is not needed,
/// only close to the real one.
fn near(secret: &str) -> String {
    let mut near = secret.to_owned();
    let last = near.pop().unwrap();
    near.push(if last == 'a' { 'b' } else { 'a' });
    near
}

async fn no_rpc_logs_a_secret_or_the_admin_credential(backend: Backend) {
    capture_logs_with("trace");
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut admin = app.admin.clone();

    // An admin token, and a token it administers.
    let (admin_token, admin_secret) = app.create_token("ops", &["latchkey:admin"]).await;
    let (token, secret) = app.create_token("alice", &["read"]).await;

    // TokenAdmin, each RPC at least once, with the static credential and
    // with the admin token.
    admin
        .get_token(with_bearer(
            pb::GetTokenRequest {
                id: token.id.clone(),
            },
            &admin_secret,
        ))
        .await
        .unwrap();
    admin
        .list_tokens(with_bearer(pb::ListTokensRequest::default(), &admin_secret))
        .await
        .unwrap();
    let mut renamed = token.clone();
    renamed.name = "renamed".into();
    app.update(renamed, &["name"]).await.unwrap();
    app.revoke(&token.id, "rotating").await.unwrap();
    app.restore(&token.id).await.unwrap();
    let (renewed, renewed_secret) = app.renew_with_grace(&token.id, 60).await;
    app.disable_owner("alice", "suspended").await.unwrap();
    app.get_owner("alice").await.unwrap();
    app.enable_owner("alice").await.unwrap();
    app.events(&renewed.id, "").await;
    admin
        .list_keys(app.admin_request(pb::ListKeysRequest {}))
        .await
        .unwrap();

    // Verify and Check: hit, miss, wrong scope, near misses.
    for s in [&secret, &renewed_secret, &admin_secret] {
        app.verify(s, &[]).await;
        app.verify(s, &["write"]).await;
        app.verify(&near(s), &[]).await;
    }
    assert_eq!(
        app.verify(&renewed_secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    let mut envoy = AuthorizationClient::new(app.channel.clone());
    for s in [&renewed_secret, &near(&renewed_secret)] {
        envoy
            .check(check_request(&format!("Bearer {s}")))
            .await
            .unwrap();
    }
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // TokenSelf: a device looks itself up, renews itself, replays its old
    // secret (reuse detection revokes the chain), and a script revokes
    // itself.
    let mut own = TokenSelfClient::new(app.channel.clone());
    let (_, device_secret) = app
        .create_token(
            "device-7",
            &["latchkey:self-renew", "kubernetes:authenticate"],
        )
        .await;
    own.lookup_self(with_bearer(pb::LookupSelfRequest {}, &device_secret))
        .await
        .unwrap();
    let renewal = pb::RenewSelfRequest {
        grace_period: Some(duration(60)),
    };
    let device_renewed = own
        .renew_self(with_bearer(renewal, &device_secret))
        .await
        .unwrap()
        .into_inner()
        .secret;
    // Both secrets still verify, for introspection and TokenReview below.
    let (_, gateway_secret) = app
        .create_token("gateway", &["latchkey:introspect", "latchkey:tokenreview"])
        .await;
    let http = app.http_addr.unwrap();
    let bearer = format!("Bearer {gateway_secret}");
    for s in [&device_secret, &device_renewed, &near(&device_secret)] {
        let form = format!("token={s}");
        let answer = http_request(
            http,
            "POST",
            "/oauth2/introspect",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", &bearer),
            ],
            form.as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 200);
        let review = format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{s}"}}}}"#
        );
        let answer = http_request(
            http,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
            ],
            review.as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert!(!answer.body.contains(s.as_str()));
    }
    let reused = own
        .renew_self(with_bearer(renewal, &device_secret))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    let (_, script_secret) = app.create_token("ci", &[]).await;
    own.revoke_self(with_bearer(
        pb::RevokeSelfRequest::default(),
        &script_secret,
    ))
    .await
    .unwrap();

    // Secrets where they do not belong, and credentials that are refused.
    let misplaced = admin
        .get_token(app.admin_request(pb::GetTokenRequest { id: secret.clone() }))
        .await
        .unwrap_err();
    assert_eq!(misplaced.code(), Code::InvalidArgument);
    assert!(!misplaced.message().contains(&secret), "{misplaced:?}");
    let as_scope = app
        .try_verify(&renewed_secret, &[&format!("{secret}!")])
        .await
        .unwrap_err();
    assert!(!as_scope.message().contains(&secret), "{as_scope:?}");
    // (The renewed token's predecessor still works in its grace period.)
    for (credential, code) in [
        (renewed_secret.clone(), Code::PermissionDenied),
        (secret.clone(), Code::PermissionDenied),
        (near(&admin_secret), Code::Unauthenticated),
        (near(ADMIN_TOKEN), Code::Unauthenticated),
    ] {
        let refused = admin
            .list_tokens(with_bearer(pb::ListTokensRequest::default(), &credential))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
    }

    // Deletion last.
    app.delete(&renewed.id).await.unwrap();
    app.delete_owner_tokens("alice").await.unwrap();
    app.delete(&admin_token.id).await.unwrap();
    app.stop().await;

    let logs = captured_logs();
    assert!(
        logs.contains(&token.id) && logs.contains("TRACE") && logs.contains("h2"),
        "the TRACE capture is not working"
    );
    // Every request runs in spans that name the token by its id: the call's
    // method, the lifecycle step, the verification.
    for span in [
        format!("revoke{{token_id={}}}", token.id),
        format!(
            "grpc{{path=\"/latchkey.v1.TokenVerify/Verify\" token_id={}}}",
            token.id
        ),
        "grpc{path=\"/latchkey.v1.TokenAdmin/RevokeToken\"".to_owned(),
        "http{path=\"/oauth2/introspect\" token_id=".to_owned(),
    ] {
        assert!(logs.contains(&span), "no log line in span {span}");
    }
    for (what, s) in [
        ("a token secret", secret.as_str()),
        ("a renewed secret", renewed_secret.as_str()),
        ("an admin token", admin_secret.as_str()),
        ("a device token", device_secret.as_str()),
        ("a renewed device token", device_renewed.as_str()),
        ("an introspecting token", gateway_secret.as_str()),
        ("a self-revoked token", script_secret.as_str()),
        ("the static admin credential", ADMIN_TOKEN),
        ("the HMAC key", HMAC_KEY),
    ] {
        assert!(!logs.contains(s), "{what} reached a log line");
    }
    // Not even the random part of a secret, nor a near miss of one.
    for s in [
        &secret,
        &renewed_secret,
        &admin_secret,
        &device_secret,
        &device_renewed,
        &gateway_secret,
    ] {
        let body = &s[3..s.len() - 6];
        assert!(
            !logs.contains(body),
            "a secret's random part reached a log line"
        );
        assert!(
            !logs.contains(&near(s)),
            "a near miss of a secret reached a log line"
        );
    }
}
