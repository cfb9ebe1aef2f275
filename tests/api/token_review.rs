//! Kubernetes webhook token authentication on the HTTP listener, driven with
//! the TokenReview the API server sends (Kubernetes documentation,
//! "Webhook Token Authentication").

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::grpc::pb;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_valid_token_authenticates_as_its_owner_with_groups_and_extra,
    a_token_that_is_not_valid_is_not_authenticated_and_says_why,
    the_required_scope_and_group_prefix_are_configurable,
    a_request_that_is_not_a_token_review_is_a_bad_request,
);

const KUBE_SCOPE: &str = "kubernetes:authenticate";

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// The body kube-apiserver posts for `token`.
fn review(api_version: &str, token: &str) -> String {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": "TokenReview",
        "metadata": { "creationTimestamp": null },
        "spec": {
            "token": token,
            "audiences": ["https://myserver.example.com", "https://myserver.internal.example.com"],
        },
        "status": { "user": {} },
    })
    .to_string()
}

async fn post_review(app: &TestApp, path: &str, body: &str) -> HttpAnswer {
    http_request(
        app.http_addr.unwrap(),
        "POST",
        path,
        &[
            ("Accept", "application/json, */*"),
            ("Content-Type", "application/json"),
            (
                "User-Agent",
                "kube-apiserver/v1.31.0 (linux/amd64) kubernetes/9c8e5a5",
            ),
        ],
        body.as_bytes(),
    )
    .await
}

/// The `status` of the review of `token` (v1).
async fn status_of(app: &TestApp, token: &str) -> serde_json::Value {
    let answer = post_review(
        app,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &review("authentication.k8s.io/v1", token),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(json["kind"], "TokenReview");
    json["status"].clone()
}

async fn a_valid_token_authenticates_as_its_owner_with_groups_and_extra(backend: Backend) {
    let app = spawn(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "jane@example.com".into(),
            name: "kubectl".into(),
            scopes: vec![KUBE_SCOPE.into(), "developers".into()],
            metadata: BTreeMap::from([("team".into(), "infra".into())]),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = created.token.unwrap();

    let status = status_of(&app, &created.secret).await;
    assert_eq!(
        status,
        serde_json::json!({
            "authenticated": true,
            "user": {
                "username": "jane@example.com",
                "uid": token.id,
                "groups": ["latchkey:kubernetes:authenticate", "latchkey:developers"],
                "extra": { "team": ["infra"] },
            },
        })
    );

    // The API server's default webhook version, answered in kind.
    let answer = post_review(
        &app,
        "/apis/authentication.k8s.io/v1beta1/tokenreviews",
        &review("authentication.k8s.io/v1beta1", &created.secret),
    )
    .await;
    let json = answer.json();
    assert_eq!(json["apiVersion"], "authentication.k8s.io/v1beta1");
    assert_eq!(json["status"]["authenticated"], true);
}

async fn a_token_that_is_not_valid_is_not_authenticated_and_says_why(backend: Backend) {
    let app = spawn(backend).await;
    let (revoked, revoked_secret) = app.create_token("alice", &[KUBE_SCOPE]).await;
    app.revoke(&revoked.id, "leaked").await.unwrap();
    let expiring = app
        .create(pb::CreateTokenRequest {
            owner: "bob".into(),
            name: "short".into(),
            scopes: vec![KUBE_SCOPE.into()],
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(60))),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, api_only) = app.create_token("carol", &["repo:read"]).await;
    app.clock.advance(Duration::from_secs(61));

    for (what, token, error) in [
        (
            "revoked",
            revoked_secret.as_str(),
            "the token has been revoked",
        ),
        ("expired", expiring.secret.as_str(), "the token has expired"),
        ("malformed", "lk_notatoken", "the token is not valid"),
        (
            "a service account token",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.e30.c2ln",
            "the token is not valid",
        ),
        (
            "insufficient scope",
            api_only.as_str(),
            "the token lacks scope kubernetes:authenticate",
        ),
        ("empty", "", "no token was given"),
    ] {
        let status = status_of(&app, token).await;
        assert_eq!(
            status,
            serde_json::json!({ "authenticated": false, "error": error }),
            "{what}"
        );
    }
}

async fn the_required_scope_and_group_prefix_are_configurable(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.token_review.required_scope = String::new();
        s.token_review.group_prefix = "oidc:".into();
    })
    .await;
    let (token, secret) = app.create_token("svc-deployer", &["deploy"]).await;
    let status = status_of(&app, &secret).await;
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["user"]["uid"], token.id.as_str());
    assert_eq!(status["user"]["groups"], serde_json::json!(["oidc:deploy"]));
    assert_eq!(status["user"]["extra"], serde_json::json!({}));
}

async fn a_request_that_is_not_a_token_review_is_a_bad_request(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app.create_token("alice", &[KUBE_SCOPE]).await;
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    for body in [
        review("authentication.k8s.io/v2", &secret),
        review("authentication.k8s.io/v1", &secret).replace("TokenReview", "SubjectAccessReview"),
        format!(
            "{{\"apiVersion\": \"authentication.k8s.io/v1\", \"kind\": \"TokenReview\", \"spec\": \"{secret}\"}}"
        ),
        "not json".to_owned(),
    ] {
        let answer = post_review(&app, path, &body).await;
        assert_eq!(answer.status, 400, "{body}");
        let json = answer.json();
        assert_eq!(
            (&json["kind"], &json["code"]),
            (&"Status".into(), &400.into())
        );
        assert!(!answer.body.contains(&secret), "an error echoed the token");
    }
}
