//! TokenAdmin authentication: the static credential, tokens with
//! `latchkey:admin` (exactly), and `latchkey admin-token issue`.

use std::sync::Arc;

use latchkey::grpc::pb;
use tonic::{Code, Request};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    admin_calls_without_a_valid_credential_are_unauthenticated,
    a_valid_token_without_the_admin_scope_is_permission_denied,
    a_token_with_the_admin_scope_administers,
    a_wildcard_never_grants_administration,
    admin_token_issue_prints_only_a_secret_that_administers,
    a_failed_admin_token_issue_prints_no_secret_and_writes_nothing,
    every_admin_rpc_refuses_every_credential_that_is_not_a_valid_admin_one,
);

/// The whole matrix: every TokenAdmin RPC against no credential, a
/// malformed one, a wrong static one, admin tokens that are revoked,
/// expired, inactive or whose owner is disabled (UNAUTHENTICATED), and a
/// valid token without `latchkey:admin` (PERMISSION_DENIED). Nothing changes.
async fn every_admin_rpc_refuses_every_credential_that_is_not_a_valid_admin_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, user_secret) = app.create_token("u", &["repo:read"]).await;
    let admin_token = |owner: &str, expiration, idle_timeout| pb::CreateTokenRequest {
        owner: owner.into(),
        name: "ops".into(),
        scopes: vec!["latchkey:admin".into()],
        expiration,
        idle_timeout,
        ..Default::default()
    };
    let created = app.create(admin_token("ops-r", None, None)).await.unwrap();
    let revoked = created.secret;
    app.revoke(&created.token.unwrap().id, "").await.unwrap();
    let ttl = Some(pb::create_token_request::Expiration::Ttl(duration(60)));
    let expired = app
        .create(admin_token("ops-e", ttl, None))
        .await
        .unwrap()
        .secret;
    let inactive = app
        .create(admin_token("ops-i", None, Some(duration(90))))
        .await
        .unwrap()
        .secret;
    let disabled = app
        .create(admin_token("ops-d", None, None))
        .await
        .unwrap()
        .secret;
    app.disable_owner("ops-d", "left").await.unwrap();
    app.clock.advance(std::time::Duration::from_secs(120));
    let before = (
        without_last_use(app.list_all().await),
        app.events("", "").await,
    );
    let id = token.id.clone();
    let unauthenticated = [
        None,
        Some("lk_malformed"),
        Some("wrong-admin-credential-0123456789abcdef"),
        Some(revoked.as_str()),
        Some(expired.as_str()),
        Some(inactive.as_str()),
        Some(disabled.as_str()),
    ];
    let matrix = unauthenticated
        .into_iter()
        .map(|c| (c, Code::Unauthenticated))
        .chain([(Some(user_secret.as_str()), Code::PermissionDenied)]);
    for (credential, expected) in matrix {
        let mut c = app.admin.clone();
        macro_rules! refused {
            ($call:ident, $msg:expr) => {
                let request = match credential {
                    Some(cred) => with_bearer($msg, cred),
                    None => Request::new($msg),
                };
                let status = c.$call(request).await.expect_err(stringify!($call));
                assert_eq!(
                    status.code(),
                    expected,
                    "{} with {credential:?}",
                    stringify!($call)
                );
            };
        }
        refused!(
            create_token,
            pb::CreateTokenRequest {
                owner: "u".into(),
                ..Default::default()
            }
        );
        refused!(get_token, pb::GetTokenRequest { id: id.clone() });
        refused!(list_tokens, pb::ListTokensRequest::default());
        refused!(
            update_token,
            pb::UpdateTokenRequest {
                token: Some(token.clone()),
                update_mask: None
            }
        );
        refused!(
            revoke_token,
            pb::RevokeTokenRequest {
                id: id.clone(),
                reason: String::new()
            }
        );
        refused!(restore_token, pb::RestoreTokenRequest { id: id.clone() });
        refused!(delete_token, pb::DeleteTokenRequest { id: id.clone() });
        refused!(
            renew_token,
            pb::RenewTokenRequest {
                id: id.clone(),
                ..Default::default()
            }
        );
        refused!(
            disable_owner,
            pb::DisableOwnerRequest {
                owner: "u".into(),
                reason: String::new()
            }
        );
        refused!(enable_owner, pb::EnableOwnerRequest { owner: "u".into() });
        refused!(get_owner, pb::GetOwnerRequest { owner: "u".into() });
        refused!(
            delete_owner_tokens,
            pb::DeleteOwnerTokensRequest { owner: "u".into() }
        );
        refused!(list_token_events, pb::ListTokenEventsRequest::default());
        refused!(list_keys, pb::ListKeysRequest::default());
    }
    // The user token's refused calls count as uses; nothing else changed.
    assert_eq!(
        (
            without_last_use(app.list_all().await),
            app.events("", "").await
        ),
        before
    );
}

async fn list_with(
    app: &TestApp,
    req: Request<pb::ListTokensRequest>,
) -> Result<pb::ListTokensResponse, tonic::Status> {
    app.admin
        .clone()
        .list_tokens(req)
        .await
        .map(|r| r.into_inner())
}

async fn admin_calls_without_a_valid_credential_are_unauthenticated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (revoked, revoked_secret) = app.create_token("u", &["latchkey:admin"]).await;
    app.revoke(&revoked.id, "").await.unwrap();

    assert_code(
        list_with(&app, Request::new(pb::ListTokensRequest::default())).await,
        Code::Unauthenticated,
    );
    for credential in [
        "wrong-admin-credential-0123456789abcdef",
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        "lk_malformed",
        &revoked_secret,
    ] {
        let status = assert_code(
            list_with(
                &app,
                with_bearer(pb::ListTokensRequest::default(), credential),
            )
            .await,
            Code::Unauthenticated,
        );
        assert!(!status.message().contains(credential));
    }
    let mut basic = Request::new(pb::ListTokensRequest::default());
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {ADMIN_TOKEN}").parse().unwrap(),
    );
    assert_code(list_with(&app, basic).await, Code::Unauthenticated);
    // Nothing was created by a refused call.
    let denied = pb::CreateTokenRequest {
        owner: "u".into(),
        ..Default::default()
    };
    assert_code(
        app.admin.clone().create_token(Request::new(denied)).await,
        Code::Unauthenticated,
    );
    assert_eq!(app.list_all().await.len(), 1);
}

async fn a_valid_token_without_the_admin_scope_is_permission_denied(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &["repo:read", "latchkey:self"]).await;
    let status = assert_code(
        list_with(&app, with_bearer(pb::ListTokensRequest::default(), &secret)).await,
        Code::PermissionDenied,
    );
    assert!(!status.message().contains(&secret));
    let create = pb::CreateTokenRequest {
        owner: "u".into(),
        ..Default::default()
    };
    assert_code(
        app.admin
            .clone()
            .create_token(with_bearer(create, &secret))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.list_all().await.len(), 1);
}

async fn a_token_with_the_admin_scope_administers(backend: Backend) {
    let app = spawn_app(backend).await;
    {
        let (_, secret) = app.create_token("ops", &["latchkey:admin"]).await;
        let create = pb::CreateTokenRequest {
            owner: "u".into(),
            ..Default::default()
        };
        let created = app
            .admin
            .clone()
            .create_token(with_bearer(create, &secret))
            .await
            .unwrap();
        assert!(created.into_inner().token.is_some());
        list_with(&app, with_bearer(pb::ListTokensRequest::default(), &secret))
            .await
            .unwrap();
    }
}

async fn a_wildcard_never_grants_administration(backend: Backend) {
    let app = spawn_app(backend).await;
    for scopes in [&["latchkey:*"][..], &["latchkey:*", "repo:*"], &["*"]] {
        let (_, secret) = app.create_token("ops", scopes).await;
        assert_code(
            list_with(&app, with_bearer(pb::ListTokensRequest::default(), &secret)).await,
            Code::PermissionDenied,
        );
        // Verify agrees: a wildcard covers a product's scopes, never
        // latchkey's own.
        let reply = app.verify(&secret, &["latchkey:admin"]).await;
        assert_eq!(
            reply.verdict(),
            pb::Verdict::InsufficientScope,
            "{scopes:?}"
        );
    }
}

async fn admin_token_issue_prints_only_a_secret_that_administers(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let issued = run_cli(
        &db,
        &["admin-token", "issue", "--name", "ops", "--ttl", "1h"],
    )
    .await;
    assert!(issued.status.success(), "{issued:?}");
    let stdout = String::from_utf8(issued.stdout).unwrap();
    let secret = stdout.strip_suffix('\n').expect("one line");
    assert!(
        secret.starts_with("lk_") && secret.len() == 52 && !secret.contains(char::is_whitespace),
        "stdout holds the secret and nothing else: {stdout:?}"
    );
    let stderr = String::from_utf8_lossy(&issued.stderr);
    assert!(!stderr.contains(secret), "the secret reached the log");

    let mut settings = test_settings(&db);
    settings.admin_token = None;
    let app = spawn_app_on(Arc::clone(&db), settings).await;
    let tokens = list_with(&app, with_bearer(pb::ListTokensRequest::default(), secret))
        .await
        .expect("the issued token administers")
        .tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0].owner.as_str(), tokens[0].name.as_str()),
        ("latchkey", "ops")
    );
    assert_eq!(tokens[0].scopes, vec!["latchkey:admin"]);
    let lifetime = tokens[0].expire_time.unwrap().seconds - tokens[0].create_time.unwrap().seconds;
    assert_eq!(lifetime, 3600);
    let events = app
        .admin
        .clone()
        .list_token_events(with_bearer(
            pb::ListTokenEventsRequest {
                token_id: tokens[0].id.clone(),
                ..Default::default()
            },
            secret,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].actor, "system");
    // The static credential is not configured, so it is not accepted.
    assert_code(
        list_with(
            &app,
            with_bearer(pb::ListTokensRequest::default(), ADMIN_TOKEN),
        )
        .await,
        Code::Unauthenticated,
    );
    // A server without an admin credential says in its log how to get one.
    assert!(captured_logs().contains("latchkey admin-token issue"));

    // Each run issues one more, however many there are. Its log, on a pipe,
    // is plain text: no colour codes, no PostgreSQL notices about the
    // schema being there already.
    let again = run_cli(&db, &["admin-token", "issue"]).await;
    assert!(again.status.success());
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains('\u{1b}'), "ANSI codes on a pipe: {log:?}");
    assert!(!log.contains("already exists"), "{log}");
    assert_ne!(again.stdout, stdout.as_bytes());
    let all = list_with(&app, with_bearer(pb::ListTokensRequest::default(), secret))
        .await
        .unwrap();
    assert_eq!(all.tokens.len(), 2);
}

async fn a_failed_admin_token_issue_prints_no_secret_and_writes_nothing(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    // A lifetime the policy refuses, and a bad duration.
    let refused = run_cli_with(
        &db,
        &["admin-token", "issue", "--ttl", "400d"],
        &[("LATCHKEY_POLICY__MAX_TTL", "90d")],
    )
    .await;
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("policy.max_ttl"), "{stderr}");
    let bad = run_cli(&db, &["admin-token", "issue", "--ttl", "soon"]).await;
    assert!(!bad.status.success() && bad.stdout.is_empty());
    let app = spawn_app_on(Arc::clone(&db), test_settings(&db)).await;
    assert!(app.list_all().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_issues_nothing_and_logs_no_secret() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    // Prometheus' default port, taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = test_settings(&db);
    settings.admin_token = None;
    settings.metrics_addr = busy.local_addr().unwrap();
    let failed = try_spawn_app_on(Arc::clone(&db), settings.clone()).await;
    assert!(failed.is_err(), "started on a busy port");
    settings.metrics_addr = "127.0.0.1:0".parse().unwrap();
    let app = spawn_app_on(db, settings).await;
    let issued = run_cli(&app.db, &["admin-token", "issue"]).await;
    let secret = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let tokens = list_with(&app, with_bearer(pb::ListTokensRequest::default(), &secret))
        .await
        .unwrap()
        .tokens;
    assert_eq!(tokens.len(), 1, "only the token issued by hand");
    assert!(!captured_logs().contains(&secret));
}
