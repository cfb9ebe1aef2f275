//! TokenSelf: a token looking up, renewing and revoking itself, and reuse
//! detection revoking a renewal chain whose old secret came back.

use std::time::Duration;

use latchkey::grpc::pb::{
    self, EventKind, TokenStatus, Verdict, token_self_client::TokenSelfClient,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    lookup_self_answers_the_presenting_token_and_nothing_else,
    renew_self_rolls_the_secret_with_a_grace_period,
    renew_self_needs_the_self_renew_scope_and_a_bounded_grace,
    replaying_a_token_in_its_grace_period_revokes_the_whole_chain,
    replaying_a_revoked_old_token_revokes_the_whole_chain,
    two_renewals_racing_with_one_token_are_a_reuse,
    revoke_self_revokes_the_presenting_token,
);

const SELF_RENEW: &str = "latchkey:self-renew";

fn client(app: &TestApp) -> TokenSelfClient<Channel> {
    TokenSelfClient::new(app.channel.clone())
}

async fn lookup(app: &TestApp, secret: &str) -> Result<pb::Token, Status> {
    client(app)
        .lookup_self(with_bearer(pb::LookupSelfRequest {}, secret))
        .await
        .map(|r| r.into_inner())
}

async fn renew(
    app: &TestApp,
    secret: &str,
    grace_secs: i64,
) -> Result<(pb::Token, String), Status> {
    let request = pb::RenewSelfRequest {
        grace_period: (grace_secs > 0).then(|| duration(grace_secs)),
    };
    client(app)
        .renew_self(with_bearer(request, secret))
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.token.expect("token"), r.secret)
        })
}

async fn revoke(app: &TestApp, secret: &str, reason: &str) -> Result<pb::Token, Status> {
    let request = pb::RevokeSelfRequest {
        reason: reason.to_owned(),
    };
    client(app)
        .revoke_self(with_bearer(request, secret))
        .await
        .map(|r| r.into_inner())
}

/// A device token that may renew itself, expiring in 30 days.
async fn device_token(app: &TestApp) -> (pb::Token, String) {
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "device-7".into(),
            name: "sensor".into(),
            scopes: vec!["telemetry:write".into(), SELF_RENEW.into()],
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(
                30 * DAY as i64,
            ))),
            ..Default::default()
        })
        .await
        .unwrap();
    (created.token.unwrap(), created.secret)
}

async fn lookup_self_answers_the_presenting_token_and_nothing_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = device_token(&app).await;
    let (_, other) = app.create_token("bob", &[]).await;

    let found = lookup(&app, &secret).await.unwrap();
    assert_eq!(found.id, token.id);
    assert_eq!(found.owner, "device-7");
    assert_eq!(found.status(), TokenStatus::Active);
    assert_eq!(lookup(&app, &other).await.unwrap().owner, "bob");

    // No credential, a malformed one, a revoked or expired token, or one
    // whose owner is disabled: not authenticated.
    let no_credential = client(&app).lookup_self(pb::LookupSelfRequest {}).await;
    assert_code(no_credential, Code::Unauthenticated);
    assert_code(lookup(&app, "lk_not-a-token").await, Code::Unauthenticated);
    app.disable_owner("bob", "left").await.unwrap();
    assert_code(lookup(&app, &other).await, Code::Unauthenticated);
    app.revoke(&token.id, "lost").await.unwrap();
    assert_code(lookup(&app, &secret).await, Code::Unauthenticated);
    let short = app.create_with_ttl("carol", 60).await;
    app.clock.advance(Duration::from_secs(61));
    assert_code(lookup(&app, &short.secret).await, Code::Unauthenticated);
}

async fn renew_self_rolls_the_secret_with_a_grace_period(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, old_secret) = device_token(&app).await;
    app.clock.advance(Duration::from_secs(10 * DAY));

    let (new, new_secret) = renew(&app, &old_secret, 600).await.unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(new.replaces, old.id);
    assert_eq!((&new.owner, &new.scopes), (&old.owner, &old.scopes));
    // The old lifetime's length, from now.
    let lifetime = new.expire_time.unwrap().seconds - new.create_time.unwrap().seconds;
    assert_eq!(lifetime, 30 * DAY as i64);
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.verify(&old_secret, &[]).await.verdict(), Verdict::Valid);

    app.clock.advance(Duration::from_secs(601));
    assert_eq!(
        app.verify(&old_secret, &[]).await.verdict(),
        Verdict::Expired
    );
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    let events = app.events(&old.id, "").await;
    let renewed = events
        .iter()
        .find(|e| e.kind() == EventKind::Renewed)
        .unwrap();
    assert_eq!(renewed.actor, old.id, "the token renewed itself");
}

async fn renew_self_needs_the_self_renew_scope_and_a_bounded_grace(backend: Backend) {
    let app = spawn_app(backend).await;
    let (plain, plain_secret) = app.create_token("alice", &["repo:read"]).await;
    let denied = assert_code(renew(&app, &plain_secret, 0).await, Code::PermissionDenied);
    assert!(
        denied.message().contains(SELF_RENEW),
        "{}",
        denied.message()
    );

    let (device, secret) = device_token(&app).await;
    // policy.max_self_renew_grace defaults to an hour.
    assert_invalid(renew(&app, &secret, 3601).await, "grace_period");
    let negative = client(&app)
        .renew_self(with_bearer(
            pb::RenewSelfRequest {
                grace_period: Some(duration(-1)),
            },
            &secret,
        ))
        .await;
    assert_invalid(negative, "grace_period");

    // Nothing was written by any refusal.
    assert_eq!(app.list_all().await.len(), 2);
    for id in [&plain.id, &device.id] {
        assert_eq!(app.event_kinds(id).await, [EventKind::Created]);
    }
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
}

/// Renews the device token twice: A (grace 1 h) → B (no grace) → C.
async fn chain_of_three(app: &TestApp) -> [(pb::Token, String); 3] {
    let a = device_token(app).await;
    let b = renew(app, &a.1, 3600).await.unwrap();
    let c = renew(app, &b.1, 0).await.unwrap();
    [a, b, c]
}

/// Every token of the chain is revoked, each with an event naming the
/// replayed token, and the chain's current secret no longer verifies.
async fn assert_chain_revoked(app: &TestApp, chain: &[(pb::Token, String); 3], replayed: &str) {
    for (token, secret) in chain {
        let now = app.get(&token.id).await.unwrap();
        assert_eq!(now.status(), TokenStatus::Revoked, "{}", token.id);
        assert_eq!(
            app.verify(secret, &[]).await.verdict(),
            Verdict::Revoked,
            "{}",
            token.id
        );
    }
    // A and C were live until the replay: each got an event saying why
    // (B was already revoked by its own renewal).
    for (token, _) in [&chain[0], &chain[2]] {
        let events = app.events(&token.id, "").await;
        let revoked = events
            .iter()
            .find(|e| e.kind() == EventKind::Revoked)
            .unwrap_or_else(|| panic!("no REVOKED event for {}", token.id));
        assert!(
            revoked.detail["reason"].contains("reuse detected"),
            "{:?}",
            revoked.detail
        );
        assert_eq!(revoked.detail["reused_token_id"], replayed);
        assert_eq!(revoked.actor, replayed);
    }
    // The chain cannot be brought back by renewing again.
    assert_code(renew(app, &chain[2].1, 0).await, Code::Unauthenticated);
}

async fn replaying_a_token_in_its_grace_period_revokes_the_whole_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let chain = chain_of_three(&app).await;
    let (a, a_secret) = &chain[0];
    // A is in its grace period: it still verifies.
    assert_eq!(app.verify(a_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.verify(&chain[2].1, &[]).await.verdict(), Verdict::Valid);

    let reused = assert_code(renew(&app, a_secret, 0).await, Code::Unauthenticated);
    assert!(
        reused.message().contains("renewal chain"),
        "{}",
        reused.message()
    );
    assert_chain_revoked(&app, &chain, &a.id).await;
}

async fn replaying_a_revoked_old_token_revokes_the_whole_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let chain = chain_of_three(&app).await;
    let (b, b_secret) = &chain[1];
    // B was revoked by its renewal (no grace): it verifies as REVOKED, and
    // still it must not be presented for renewal.
    assert_eq!(app.verify(b_secret, &[]).await.verdict(), Verdict::Revoked);

    assert_code(renew(&app, b_secret, 0).await, Code::Unauthenticated);
    assert_chain_revoked(&app, &chain, &b.id).await;
    // An unrelated token of the same owner is untouched.
    let (other, other_secret) = device_token(&app).await;
    assert_eq!(
        app.verify(&other_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(app.event_kinds(&other.id).await, [EventKind::Created]);
}

async fn two_renewals_racing_with_one_token_are_a_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = device_token(&app).await;
    let (first, second) = tokio::join!(renew(&app, &secret, 60), renew(&app, &secret, 60));
    let (renewed, reused) = match (first, second) {
        (Ok(r), Err(e)) | (Err(e), Ok(r)) => (r, e),
        other => panic!("one renewal should win and the other be a reuse: {other:?}"),
    };
    assert_eq!(reused.code(), Code::Unauthenticated, "{reused:?}");
    for id in [&token.id, &renewed.0.id] {
        assert_eq!(app.get(id).await.unwrap().status(), TokenStatus::Revoked);
    }
}

async fn revoke_self_revokes_the_presenting_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("alice", &["repo:read"]).await;
    let (kept, kept_secret) = app.create_token("alice", &["repo:read"]).await;

    let revoked = revoke(&app, &secret, "").await.unwrap();
    assert_eq!(revoked.id, token.id);
    assert_eq!(revoked.status(), TokenStatus::Revoked);
    assert_eq!(revoked.revoke_reason, "revoked by its holder");
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Revoked);
    let events = app.events(&token.id, "").await;
    assert_eq!(events[0].kind(), EventKind::Revoked);
    assert_eq!(events[0].actor, token.id);
    // Done once: the token no longer authenticates.
    assert_code(revoke(&app, &secret, "").await, Code::Unauthenticated);

    // A reason is kept, and bounded like the admin's.
    assert_invalid(
        revoke(&app, &kept_secret, &"x".repeat(1025)).await,
        "reason",
    );
    let with_reason = revoke(&app, &kept_secret, "device wiped").await.unwrap();
    assert_eq!(with_reason.revoke_reason, "device wiped");
    assert_eq!(
        app.get(&kept.id).await.unwrap().status(),
        TokenStatus::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_with_a_grace_period_count_against_the_active_cap() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.limits.max_active_tokens_per_owner = 2;
    })
    .await;
    let (_, secret) = app.create_token("device", &[SELF_RENEW]).await;
    // One renewal with a grace period: two live secrets, the cap.
    let (_, second) = renew(&app, &secret, 600).await.unwrap();
    let refused = renew(&app, &second, 600).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_active_tokens_per_owner"));
    let admin_refused = app
        .renew(pb::RenewTokenRequest {
            id: app.list_all().await[0].id.clone(),
            grace_period: Some(duration(600)),
            expiration: None,
        })
        .await
        .unwrap_err();
    assert_eq!(admin_refused.code(), Code::ResourceExhausted);
    // Without a grace period the old secret dies as the new one is born.
    let (_, third) = renew(&app, &second, 0).await.unwrap();
    let live = app
        .list_all()
        .await
        .into_iter()
        .filter(|t| t.status() == TokenStatus::Active)
        .count();
    assert_eq!(live, 2, "first (in grace) and third");
    assert_eq!(app.verify(&third, &[]).await.verdict(), Verdict::Valid);
}
