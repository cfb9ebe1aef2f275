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
    two_renewals_racing_with_one_token_leave_one_live_secret,
    revoke_self_revokes_the_presenting_token,
    an_admin_renewal_starts_a_new_chain,
    a_restore_starts_a_new_chain,
    a_retried_renewal_whose_answer_was_lost_gets_a_fresh_replacement,
    a_retry_after_the_replacement_was_used_is_a_reuse,
    chains_renewed_before_the_upgrade_keep_their_reuse_detection,
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
    // still it must not be presented for renewal once C is in use.
    assert_eq!(app.verify(b_secret, &[]).await.verdict(), Verdict::Revoked);
    assert_eq!(app.verify(&chain[2].1, &[]).await.verdict(), Verdict::Valid);

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

async fn two_renewals_racing_with_one_token_leave_one_live_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = device_token(&app).await;
    // The second is a retry of the first, whose replacement nobody used
    // yet: it supersedes it.
    let (first, second) = tokio::join!(renew(&app, &secret, 60), renew(&app, &secret, 60));
    let (first, second) = (first.unwrap(), second.unwrap());
    let verdicts = [
        app.verify(&first.1, &[]).await.verdict(),
        app.verify(&second.1, &[]).await.verdict(),
    ];
    let mut sorted = verdicts;
    sorted.sort_by_key(|v| *v as i32);
    assert_eq!(sorted, [Verdict::Valid, Verdict::Revoked], "{verdicts:?}");
    let live = if verdicts[0] == Verdict::Valid {
        &first.0
    } else {
        &second.0
    };
    assert_eq!(app.get(&token.id).await.unwrap().replaced_by, live.id);
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

async fn an_admin_renewal_starts_a_new_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, old_secret) = device_token(&app).await;
    // The usual answer to a leak: an admin renews the token, with a grace
    // period for the device to pick up the new secret.
    let (new, new_secret) = app.renew_with_grace(&old.id, 60).await;
    // The attacker holding the old secret presents it, again and again,
    // during the grace period and after: refused, and nothing changes.
    for _ in 0..2 {
        assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    }
    app.clock.advance(Duration::from_secs(61));
    assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.event_kinds(&new.id).await, [EventKind::Created]);
    assert!(!app.event_kinds(&old.id).await.contains(&EventKind::Revoked));
    // The new token renews itself as any other, starting its own chain.
    let (_, newest) = renew(&app, &new_secret, 0).await.unwrap();
    assert_eq!(app.verify(&newest, &[]).await.verdict(), Verdict::Valid);
}

async fn a_restore_starts_a_new_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, old_secret) = device_token(&app).await;
    let (new, new_secret) = renew(&app, &old_secret, 0).await.unwrap();
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    // The old secret comes back: a reuse, and the chain is revoked.
    assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    assert_eq!(
        app.verify(&new_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    // An admin who has looked into it restores the device's token; the
    // old secret coming back again changes nothing any more.
    app.restore(&new.id).await.unwrap();
    for _ in 0..2 {
        assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
        assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    }
    let revocations = app
        .event_kinds(&new.id)
        .await
        .into_iter()
        .filter(|k| *k == EventKind::Revoked)
        .count();
    assert_eq!(revocations, 1);
    assert_eq!(
        app.get(&old.id).await.unwrap().status(),
        TokenStatus::Revoked
    );
}

async fn a_retried_renewal_whose_answer_was_lost_gets_a_fresh_replacement(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, old_secret) = device_token(&app).await;
    // The answer to this renewal is lost on its way to the device.
    let (lost, lost_secret) = renew(&app, &old_secret, 0).await.unwrap();
    app.clock.advance(Duration::from_secs(20));
    // The device tries again with the secret it still has.
    let (fresh, fresh_secret) = renew(&app, &old_secret, 0).await.unwrap();
    assert_ne!(fresh.id, lost.id);
    assert_eq!(fresh.replaces, old.id);
    assert_eq!(fresh.expire_time, lost.expire_time);
    assert_eq!(
        app.verify(&fresh_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(
        app.verify(&lost_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    assert_eq!(
        app.verify(&old_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    assert_eq!(app.get(&old.id).await.unwrap().replaced_by, fresh.id);
    let superseded = app.get(&lost.id).await.unwrap();
    assert!(
        superseded.revoke_reason.contains("retried"),
        "{superseded:?}"
    );
    let renewed = app
        .events(&old.id, "")
        .await
        .into_iter()
        .filter(|e| e.kind() == EventKind::Renewed)
        .count();
    assert_eq!(renewed, 2);

    // The fresh secret is in use now: the old one coming back is a reuse.
    assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    assert_eq!(
        app.verify(&fresh_secret, &[]).await.verdict(),
        Verdict::Revoked
    );

    // And past the retry window a lost answer cannot be asked again.
    let (_, secret) = device_token(&app).await;
    let (_, unused) = renew(&app, &secret, 0).await.unwrap();
    app.clock.advance(Duration::from_secs(31));
    assert_code(renew(&app, &secret, 0).await, Code::Unauthenticated);
    assert_eq!(app.verify(&unused, &[]).await.verdict(), Verdict::Revoked);
}

async fn a_retry_after_the_replacement_was_used_is_a_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, old_secret) = device_token(&app).await;
    let (new, new_secret) = renew(&app, &old_secret, 0).await.unwrap();
    // Used through any API: here a TokenSelf lookup, seen by this replica
    // before any last-used write.
    lookup(&app, &new_secret).await.unwrap();
    assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    for id in [&old.id, &new.id] {
        assert_eq!(app.get(id).await.unwrap().status(), TokenStatus::Revoked);
    }

    // Used on another replica: only its written last use tells, and it is
    // enough.
    let (_, old_secret) = device_token(&app).await;
    let (new, new_secret) = renew(&app, &old_secret, 0).await.unwrap();
    let other = spawn_app_on(std::sync::Arc::clone(&app.db), app.settings.clone()).await;
    other.clock.set(latchkey::clock::Clock::now(&*app.clock));
    assert_eq!(
        other.verify(&new_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    other.wait_for_last_used(&new.id, None).await;
    assert_code(renew(&app, &old_secret, 0).await, Code::Unauthenticated);
    assert_eq!(
        app.get(&new.id).await.unwrap().status(),
        TokenStatus::Revoked
    );
}

async fn chains_renewed_before_the_upgrade_keep_their_reuse_detection(backend: Backend) {
    use migrations::{Migrator, MigratorTrait as _};

    let app = spawn_app(backend).await;
    let (_, device_secret) = device_token(&app).await;
    let (renewed, renewed_secret) = renew(&app, &device_secret, 0).await.unwrap();
    let (admin_old, admin_old_secret) = device_token(&app).await;
    let (admin_new, admin_new_secret) = app.renew_with_grace(&admin_old.id, 0).await;
    let (db, settings) = app.stop().await;
    // Back to the schema before renewal links were marked, then up again:
    // the links are read back from the audit trail.
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    Migrator::down(&conn, Some(1)).await.unwrap();
    conn.close().await.unwrap();

    let app = spawn_app_on(db, settings).await;
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(
        app.verify(&renewed_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    assert_code(renew(&app, &device_secret, 0).await, Code::Unauthenticated);
    assert_eq!(
        app.get(&renewed.id).await.unwrap().status(),
        TokenStatus::Revoked
    );
    // The admin's renewal is no self-renewal: its old secret changes nothing.
    assert_code(
        renew(&app, &admin_old_secret, 0).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        app.verify(&admin_new_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(app.event_kinds(&admin_new.id).await, [EventKind::Created]);
}
