//! Idle expiry: a token unused for longer than its idle_timeout verifies as
//! INACTIVE and lists as TOKEN_STATUS_INACTIVE until RestoreToken.

use std::time::Duration;

use latchkey::grpc::pb::{self, TokenStatus, Verdict};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    an_unused_token_goes_inactive_after_the_default_idle_timeout,
    each_use_restarts_the_idle_clock_before_and_after_it_is_written,
    restore_brings_an_inactive_token_back_and_restarts_its_clock,
    an_explicit_idle_timeout_overrides_the_default,
    revoked_and_expired_win_over_inactive,
);

const IDLE_DAYS: u64 = 30;

async fn idle_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.policy.default_idle_timeout = Some(Duration::from_secs(IDLE_DAYS * DAY));
    })
    .await
}

async fn statuses(app: &TestApp, status: TokenStatus) -> Vec<String> {
    app.list(pb::ListTokensRequest {
        statuses: vec![status as i32],
        ..Default::default()
    })
    .await
    .unwrap()
    .tokens
    .into_iter()
    .map(|t| t.id)
    .collect()
}

async fn an_unused_token_goes_inactive_after_the_default_idle_timeout(backend: Backend) {
    let app = idle_app(backend).await;
    let (token, secret) = app.create_token("alice", &[]).await;
    assert_eq!(token.idle_timeout, Some(duration((IDLE_DAYS * DAY) as i64)));

    app.clock
        .advance(Duration::from_secs(IDLE_DAYS * DAY) - Duration::from_secs(1));
    assert_eq!(
        statuses(&app, TokenStatus::Active).await,
        vec![token.id.clone()]
    );
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        app.get(&token.id).await.unwrap().status(),
        TokenStatus::Inactive
    );
    assert_eq!(
        statuses(&app, TokenStatus::Inactive).await,
        vec![token.id.clone()]
    );
    assert!(statuses(&app, TokenStatus::Active).await.is_empty());
    let v = app.verify(&secret, &[]).await;
    assert_eq!(v.verdict(), Verdict::Inactive);
    assert_eq!(v.token.unwrap().id, token.id);
}

async fn each_use_restarts_the_idle_clock_before_and_after_it_is_written(backend: Backend) {
    let app = idle_app(backend).await;
    let (token, secret) = app.create_token("bob", &[]).await;
    app.clock.advance(Duration::from_secs(20 * DAY));
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    // Thirty days after creation, but only ten after the last use: the use
    // counts at once, from memory, before the flusher has written it.
    app.clock.advance(Duration::from_secs(10 * DAY));
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    let used = app.wait_for_last_used(&token.id, None).await;
    assert_eq!(
        app.get(&token.id).await.unwrap().status(),
        TokenStatus::Active
    );

    // After a restart only the written last use is known, and it is enough.
    let app = app.restart().await;
    app.clock.set_timestamp(used);
    app.clock
        .advance(Duration::from_secs(IDLE_DAYS * DAY) - Duration::from_secs(1));
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    let app = app.restart().await;
    app.clock.set_timestamp(used);
    app.clock.advance(Duration::from_secs(IDLE_DAYS * DAY));
    // The Valid answer above was a use too: judged from it.
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    app.clock.advance(Duration::from_secs(IDLE_DAYS * DAY));
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Inactive);
}

async fn restore_brings_an_inactive_token_back_and_restarts_its_clock(backend: Backend) {
    let app = idle_app(backend).await;
    let (token, secret) = app.create_token("carol", &[]).await;
    app.clock.advance(Duration::from_secs(40 * DAY));
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Inactive);

    let restored = app.restore(&token.id).await.unwrap();
    assert_eq!(restored.status(), TokenStatus::Active);
    // At once, although Verify had cached the token as inactive.
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    app.wait_for_last_used(&token.id, None).await;

    // A fresh idle period runs from the restore (and that use), not from
    // creation.
    app.clock
        .advance(Duration::from_secs(IDLE_DAYS * DAY) - Duration::from_secs(1));
    assert_eq!(
        app.get(&token.id).await.unwrap().status(),
        TokenStatus::Active
    );
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        app.get(&token.id).await.unwrap().status(),
        TokenStatus::Inactive
    );
}

async fn an_explicit_idle_timeout_overrides_the_default(backend: Backend) {
    let app = idle_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "dave".into(),
            idle_timeout: Some(duration(3600)),
            ..Default::default()
        })
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Inactive
    );
    assert_invalid(
        app.create(pb::CreateTokenRequest {
            owner: "dave".into(),
            idle_timeout: Some(duration(0)),
            ..Default::default()
        })
        .await,
        "idle_timeout",
    );
}

async fn revoked_and_expired_win_over_inactive(backend: Backend) {
    let app = idle_app(backend).await;
    let (revoked, revoked_secret) = app.create_token("erin", &[]).await;
    app.revoke(&revoked.id, "").await.unwrap();
    let expiring = app.create_with_ttl("erin", (IDLE_DAYS * DAY) as i64).await;
    app.clock.advance(Duration::from_secs(IDLE_DAYS * DAY));
    assert_eq!(
        app.verify(&revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    assert_eq!(
        app.verify(&expiring.secret, &[]).await.verdict(),
        Verdict::Expired
    );
    assert!(statuses(&app, TokenStatus::Inactive).await.is_empty());
}
