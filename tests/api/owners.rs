//! Owners: DisableOwner, EnableOwner, GetOwner, DeleteOwnerTokens.

use latchkey::grpc::pb::{self, TokenStatus, Verdict};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_disabled_owners_tokens_verify_as_owner_disabled_at_once_and_come_back,
    an_owner_with_no_record_is_enabled_and_counts_its_tokens,
    a_lookup_that_read_before_a_disable_does_not_cache_its_stale_answer,
    a_disabled_owner_gets_no_new_tokens_and_its_admin_tokens_cannot_administer,
    delete_owner_tokens_removes_every_token_of_the_owner_only,
    owner_requests_are_validated,
);

async fn a_disabled_owners_tokens_verify_as_owner_disabled_at_once_and_come_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, a_secret) = app.create_token("alice", &["repo:read"]).await;
    let (b, b_secret) = app.create_token("alice", &[]).await;
    let (revoked, revoked_secret) = app.create_token("alice", &[]).await;
    app.revoke(&revoked.id, "lost").await.unwrap();
    let (_, other_secret) = app.create_token("bob", &[]).await;
    // Cached as VALID.
    assert_eq!(app.verify(&a_secret, &[]).await.verdict(), Verdict::Valid);

    let owner = app
        .disable_owner("alice", "account suspended")
        .await
        .unwrap();
    assert!(owner.disabled);
    assert_eq!(owner.reason, "account suspended");
    assert!(owner.disable_time.is_some());

    for secret in [&a_secret, &b_secret] {
        let v = app.verify(secret, &["repo:read"]).await;
        assert_eq!(v.verdict(), Verdict::OwnerDisabled);
        assert_eq!(v.token.unwrap().owner, "alice");
    }
    // Verdicts are checked in order: REVOKED comes before OWNER_DISABLED.
    assert_eq!(
        app.verify(&revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    assert_eq!(
        app.verify(&other_secret, &[]).await.verdict(),
        Verdict::Valid
    );
    // The tokens keep their own status.
    assert_eq!(app.get(&a.id).await.unwrap().status(), TokenStatus::Active);
    assert_eq!(
        app.get(&revoked.id).await.unwrap().status(),
        TokenStatus::Revoked
    );
    // Disabling again changes nothing, not even the reason.
    let again = app.disable_owner("alice", "other reason").await.unwrap();
    assert_eq!(again.reason, "account suspended");
    assert_eq!(again.disable_time, owner.disable_time);

    let enabled = app.enable_owner("alice").await.unwrap();
    assert!(!enabled.disabled);
    assert!(enabled.disable_time.is_none() && enabled.reason.is_empty());
    assert_eq!(app.verify(&a_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.verify(&b_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.get(&b.id).await.unwrap().status(), TokenStatus::Active);
}

async fn an_owner_with_no_record_is_enabled_and_counts_its_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let nobody = app.get_owner("nobody").await.unwrap();
    assert_eq!(nobody.owner, "nobody");
    assert!(!nobody.disabled);
    assert_eq!(nobody.token_counts, Some(pb::TokenCounts::default()));

    app.create_token("carol", &[]).await;
    let (revoked, _) = app.create_token("carol", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    app.create_with_ttl("carol", 60).await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let counts = app.get_owner("carol").await.unwrap().token_counts.unwrap();
    assert_eq!(
        counts,
        pb::TokenCounts {
            active: 1,
            revoked: 1,
            expired: 1,
            inactive: 0,
        }
    );
}

async fn a_lookup_that_read_before_a_disable_does_not_cache_its_stale_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("dave", &[]).await;
    // A Verify misses the cache and reads the owner as enabled...
    let paused = app.start_paused_verify(&secret).await;
    // ...the owner is disabled meanwhile...
    app.disable_owner("dave", "").await.unwrap();
    // ...and the lookup then finishes with what it read.
    app.gate.release();
    let stale = paused.await.unwrap().unwrap();
    assert_eq!(stale.verdict(), Verdict::Valid, "it read before the change");
    let lookups = app.gate.lookups();
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        Verdict::OwnerDisabled
    );
    assert_eq!(
        app.gate.lookups(),
        lookups + 1,
        "the stale answer was not cached"
    );
}

async fn a_disabled_owner_gets_no_new_tokens_and_its_admin_tokens_cannot_administer(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (_, admin_secret) = app.create_token("ops-bot", &["latchkey:admin"]).await;
    app.disable_owner("ops-bot", "compromised").await.unwrap();
    let s = assert_code(
        app.create(pb::CreateTokenRequest {
            owner: "ops-bot".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("disabled"), "{}", s.message());
    let as_bot = app
        .admin
        .clone()
        .get_owner(with_bearer(
            pb::GetOwnerRequest {
                owner: "ops-bot".into(),
            },
            &admin_secret,
        ))
        .await;
    assert_code(as_bot, Code::Unauthenticated);
    assert_eq!(
        app.get_owner("ops-bot")
            .await
            .unwrap()
            .token_counts
            .unwrap()
            .active,
        1
    );
}

async fn delete_owner_tokens_removes_every_token_of_the_owner_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut secrets = Vec::new();
    for _ in 0..3 {
        secrets.push(app.create_token("erin", &[]).await.1);
    }
    let (revoked, _) = app.create_token("erin", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    let (_, other) = app.create_token("frank", &[]).await;
    assert_eq!(app.verify(&secrets[0], &[]).await.verdict(), Verdict::Valid);

    assert_eq!(app.delete_owner_tokens("erin").await.unwrap(), 4);
    for s in &secrets {
        assert_eq!(app.verify(s, &[]).await.verdict(), Verdict::Unknown);
    }
    assert_code(app.get(&revoked.id).await, Code::NotFound);
    assert_eq!(app.verify(&other, &[]).await.verdict(), Verdict::Valid);
    let counts = app.get_owner("erin").await.unwrap().token_counts.unwrap();
    assert_eq!(counts, pb::TokenCounts::default());
    assert_eq!(app.delete_owner_tokens("erin").await.unwrap(), 0);
    // The audit trail outlives the tokens.
    assert_eq!(
        app.event_kinds(&revoked.id).await,
        [
            pb::EventKind::Created,
            pb::EventKind::Revoked,
            pb::EventKind::Deleted
        ]
    );
}

async fn owner_requests_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_invalid(app.disable_owner("", "").await, "owner");
    assert_invalid(app.disable_owner("x", &"r".repeat(1025)).await, "reason");
    assert_invalid(app.enable_owner("").await, "owner");
    assert_invalid(app.get_owner(&"o".repeat(257)).await, "owner");
    assert_invalid(app.delete_owner_tokens("").await, "owner");
    assert!(
        app.events("", "").await.is_empty(),
        "a refusal wrote an event"
    );
}
