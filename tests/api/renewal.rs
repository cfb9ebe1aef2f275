//! RenewToken: a new token in place of the old, whose secret dies at once or
//! after a grace period.

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::grpc::pb::{self, TokenStatus, Verdict};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_renewal_copies_the_token_and_revokes_the_old_secret_at_once,
    with_a_grace_period_the_old_secret_works_until_the_grace_ends,
    a_grace_period_never_extends_the_old_expiry,
    a_renewal_may_set_a_new_expiry_within_policy,
    an_inherited_lifetime_is_cut_to_policy_max_ttl,
    revoked_or_replaced_tokens_cannot_be_renewed_or_restored,
    a_refused_renewal_writes_nothing,
);

fn rich_request(owner: &str) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        owner: owner.into(),
        name: "laptop".into(),
        description: "personal access token".into(),
        scopes: vec!["repo:read".into(), "deploy:*".into()],
        metadata: BTreeMap::from([("team".into(), "infra".into())]),
        expiration: Some(pb::create_token_request::Expiration::Ttl(duration(
            30 * DAY as i64,
        ))),
        idle_timeout: Some(duration(7 * DAY as i64)),
        credits: None,
        rate_limits: Vec::new(),
    }
}

async fn a_renewal_copies_the_token_and_revokes_the_old_secret_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create(rich_request("alice")).await.unwrap();
    let old = created.token.unwrap();
    // Cached as VALID before the renewal.
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Valid
    );
    app.clock.advance(Duration::from_secs(10 * DAY));

    let (new, new_secret) = app.renew_with_grace(&old.id, 0).await;
    assert_ne!(new.id, old.id);
    assert_ne!(new_secret, created.secret);
    assert_eq!(
        (
            &new.owner,
            &new.name,
            &new.description,
            &new.scopes,
            &new.metadata
        ),
        (
            &old.owner,
            &old.name,
            &old.description,
            &old.scopes,
            &old.metadata
        )
    );
    assert_eq!(new.idle_timeout, old.idle_timeout);
    assert_eq!(new.replaces, old.id);
    assert_eq!(new.status(), TokenStatus::Active);
    // The old lifetime length, counted from the renewal.
    let lifetime = new.expire_time.unwrap().seconds - new.create_time.unwrap().seconds;
    assert_eq!(lifetime, 30 * DAY as i64);

    let old_now = app.get(&old.id).await.unwrap();
    assert_eq!(old_now.status(), TokenStatus::Revoked);
    assert_eq!(old_now.revoke_reason, "renewed");
    assert_eq!(old_now.replaced_by, new.id);
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
}

async fn with_a_grace_period_the_old_secret_works_until_the_grace_ends(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create(rich_request("bob")).await.unwrap();
    let old = created.token.unwrap();
    let renewed_at = app.clock.now_timestamp();
    let (new, new_secret) = app.renew_with_grace(&old.id, 3600).await;

    let old_now = app.get(&old.id).await.unwrap();
    assert_eq!(old_now.status(), TokenStatus::Active);
    assert_eq!(old_now.replaced_by, new.id);
    assert_eq!(
        old_now.expire_time.unwrap().seconds,
        renewed_at.seconds + 3600
    );
    app.clock.advance(Duration::from_secs(3599));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Expired
    );
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(
        app.get(&old.id).await.unwrap().status(),
        TokenStatus::Expired
    );
}

async fn a_grace_period_never_extends_the_old_expiry(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_with_ttl("carol", 600).await;
    let old = created.token.unwrap();
    app.renew_with_grace(&old.id, 3600).await;
    let old_now = app.get(&old.id).await.unwrap();
    assert_eq!(old_now.expire_time, old.expire_time);
    app.clock.advance(Duration::from_secs(600));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Expired
    );
}

async fn a_renewal_may_set_a_new_expiry_within_policy(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.policy.max_ttl = Some(Duration::from_secs(90 * DAY));
    })
    .await;
    let old = app
        .create_with_ttl("dave", 30 * DAY as i64)
        .await
        .token
        .unwrap();
    let renewed = app
        .renew(pb::RenewTokenRequest {
            id: old.id.clone(),
            grace_period: None,
            expiration: Some(pb::renew_token_request::Expiration::Ttl(duration(
                90 * DAY as i64,
            ))),
        })
        .await
        .unwrap()
        .token
        .unwrap();
    let lifetime = renewed.expire_time.unwrap().seconds - renewed.create_time.unwrap().seconds;
    assert_eq!(lifetime, 90 * DAY as i64);

    let too_long = app
        .renew(pb::RenewTokenRequest {
            id: renewed.id.clone(),
            grace_period: None,
            expiration: Some(pb::renew_token_request::Expiration::Ttl(duration(
                91 * DAY as i64,
            ))),
        })
        .await;
    assert_invalid(too_long, "ttl");
    let in_the_past = app
        .renew(pb::RenewTokenRequest {
            id: renewed.id.clone(),
            grace_period: None,
            expiration: Some(pb::renew_token_request::Expiration::ExpireTime(now_plus(
                &app.clock,
                Duration::ZERO,
            ))),
        })
        .await;
    assert_invalid(in_the_past, "expire_time");
    let negative_grace = app
        .renew(pb::RenewTokenRequest {
            id: renewed.id.clone(),
            grace_period: Some(duration(-1)),
            expiration: None,
        })
        .await;
    assert_invalid(negative_grace, "grace_period");
    assert_invalid(app.try_renew("not-a-uuid").await, "id");
}

async fn an_inherited_lifetime_is_cut_to_policy_max_ttl(backend: Backend) {
    // A token made before the policy tightened never expires; its renewal
    // gets the longest lifetime the policy now allows.
    let db = std::sync::Arc::new(TestDb::new(backend).await);
    let app = spawn_app_on(db.clone(), test_settings(&db)).await;
    let (old, _) = app.create_token("erin", &[]).await;
    assert!(old.expire_time.is_none());
    let (db, mut settings) = app.stop().await;
    settings.policy.max_ttl = Some(Duration::from_secs(90 * DAY));
    let app = spawn_app_on(db, settings).await;
    let (new, _) = app.renew_with_grace(&old.id, 0).await;
    let lifetime = new.expire_time.unwrap().seconds - new.create_time.unwrap().seconds;
    assert_eq!(lifetime, 90 * DAY as i64);
}

async fn revoked_or_replaced_tokens_cannot_be_renewed_or_restored(backend: Backend) {
    let app = spawn_app(backend).await;
    let (revoked, _) = app.create_token("frank", &[]).await;
    app.revoke(&revoked.id, "lost").await.unwrap();
    let s = assert_code(app.try_renew(&revoked.id).await, Code::FailedPrecondition);
    assert!(s.message().contains("revoked"), "{}", s.message());

    let (graced, _) = app.create_token("frank", &[]).await;
    let (next, _) = app.renew_with_grace(&graced.id, 3600).await;
    let s = assert_code(app.try_renew(&graced.id).await, Code::FailedPrecondition);
    assert!(s.message().contains(&next.id), "{}", s.message());

    // Replaced at once: revoked with reason "renewed", and not restorable.
    let (old, _) = app.create_token("frank", &[]).await;
    app.renew_with_grace(&old.id, 0).await;
    assert_code(app.restore(&old.id).await, Code::FailedPrecondition);
    assert_code(
        app.try_renew(&uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
}

async fn a_refused_renewal_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (old, _) = app.create_token("gina", &[]).await;
    app.revoke(&old.id, "").await.unwrap();
    let tokens_before = app.list_all().await;
    let events_before = app.events("", "").await;
    for _ in 0..2 {
        assert_code(app.try_renew(&old.id).await, Code::FailedPrecondition);
    }
    assert_eq!(app.list_all().await, tokens_before);
    assert_eq!(app.events("", "").await, events_before);
}
