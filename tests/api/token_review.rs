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
    a_token_that_is_not_valid_is_not_authenticated_and_nothing_more,
    the_required_scope_and_prefixes_are_configurable,
    a_request_that_is_not_a_token_review_is_a_bad_request,
    only_an_authenticated_caller_gets_a_review,
    no_owner_can_name_a_kubernetes_user,
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

/// A token for kube-apiserver's webhook client (its kubeconfig's
/// `users[].user.token`).
async fn reviewer(app: &TestApp) -> String {
    app.create_token("kube-apiserver", &["latchkey:tokenreview"])
        .await
        .1
}

async fn post_review(app: &TestApp, path: &str, body: &str) -> HttpAnswer {
    let caller = format!("Bearer {}", reviewer(app).await);
    post_review_as(app, path, body, Some(&caller)).await
}

async fn post_review_as(
    app: &TestApp,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> HttpAnswer {
    let mut headers = vec![
        ("Accept", "application/json, */*"),
        ("Content-Type", "application/json"),
        (
            "User-Agent",
            "kube-apiserver/v1.31.0 (linux/amd64) kubernetes/9c8e5a5",
        ),
    ];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    http_request(
        app.http_addr.unwrap(),
        "POST",
        path,
        &headers,
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
                "username": "latchkey:jane@example.com",
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

    // JSON escapes in every string the review reads read as their text.
    let escaped = |text: &str| {
        text.chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect::<String>()
    };
    let body = format!(
        r#"{{"apiVersion":"{}","kind":"{}","spec":{{"token":"{}"}}}}"#,
        escaped("authentication.k8s.io/v1"),
        escaped("TokenReview"),
        escaped(&created.secret)
    );
    let answer = post_review(&app, "/apis/authentication.k8s.io/v1/tokenreviews", &body).await;
    assert_eq!(answer.json()["status"]["authenticated"], true, "{answer:?}");
}

async fn a_token_that_is_not_valid_is_not_authenticated_and_nothing_more(backend: Backend) {
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

    // Whatever the reason, the same answer: as introspection's
    // `{"active": false}`, it tells the caller nothing more.
    for (what, token) in [
        ("revoked", revoked_secret.as_str()),
        ("expired", expiring.secret.as_str()),
        ("malformed", "lk_notatoken"),
        (
            "a service account token",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.e30.c2ln",
        ),
        ("insufficient scope", api_only.as_str()),
        ("empty", ""),
    ] {
        let status = status_of(&app, token).await;
        assert_eq!(
            status,
            serde_json::json!({ "authenticated": false }),
            "{what}"
        );
    }
}

async fn the_required_scope_and_prefixes_are_configurable(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.token_review.required_scope = String::new();
        s.token_review.group_prefix = "oidc:".into();
        s.token_review.username_prefix = "lk-".into();
    })
    .await;
    let (token, secret) = app.create_token("svc-deployer", &["deploy"]).await;
    let status = status_of(&app, &secret).await;
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["user"]["username"], "lk-svc-deployer");
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

async fn only_an_authenticated_caller_gets_a_review(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app.create_token("alice", &[KUBE_SCOPE]).await;
    let (_, wrong_scope) = app.create_token("ops", &["latchkey:introspect"]).await;
    let (_, wildcard) = app.create_token("ops", &["latchkey:*"]).await;
    let (revoked, revoked_caller) = app
        .create_token("kube-apiserver", &["latchkey:tokenreview"])
        .await;
    app.revoke(&revoked.id, "rotated").await.unwrap();
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let body = review("authentication.k8s.io/v1", &secret);
    let bearer = |t: &str| format!("Bearer {t}");
    for (what, authorization, code) in [
        ("no credential", None, 401),
        ("a malformed one", Some("Bearer lk_nope".to_owned()), 401),
        ("a revoked caller", Some(bearer(&revoked_caller)), 401),
        ("basic auth", Some("Basic a3ViZTpwYXNz".to_owned()), 401),
        ("another latchkey scope", Some(bearer(&wrong_scope)), 403),
        ("a wildcard", Some(bearer(&wildcard)), 403),
        // The token under review is no credential for the review itself.
        ("the reviewed token", Some(bearer(&secret)), 403),
    ] {
        let answer = post_review_as(&app, path, &body, authorization.as_deref()).await;
        assert_eq!(answer.status, code, "{what}: {answer:?}");
        let json = answer.json();
        assert_eq!(
            (&json["kind"], &json["code"]),
            (&"Status".into(), &code.into()),
            "{what}"
        );
        assert!(
            json.get("status").is_none_or(|s| s == "Failure"),
            "{what}: no review"
        );
        assert!(!answer.body.contains(&secret));
    }
    // The metric counts no review for them.
    let scrape = http_request(app.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert!(
        !scrape
            .body
            .lines()
            .any(|l| l.contains("api=\"tokenreview\"") && !l.ends_with(" 0")),
        "{}",
        scrape.body
    );
    assert_eq!(status_of(&app, &secret).await["authenticated"], true);
}

async fn no_owner_can_name_a_kubernetes_user(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = app
        .create_token(
            "system:kube-controller-manager",
            &[KUBE_SCOPE, "system:masters"],
        )
        .await;
    let status = status_of(&app, &secret).await;
    assert_eq!(
        status["user"]["username"],
        "latchkey:system:kube-controller-manager"
    );
    assert_eq!(
        status["user"]["groups"],
        serde_json::json!([
            "latchkey:kubernetes:authenticate",
            "latchkey:system:masters"
        ])
    );
}
