//! The workflows products built on latchkey run, end to end, step by step.

use std::time::Duration;

use latchkey::grpc::pb::{self, EventKind, TokenStatus, Verdict};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    personal_access_token_from_creation_to_deletion,
    thirty_day_token_renewed_with_an_hour_of_grace,
    owner_suspended_and_reinstated,
    a_burst_of_creations_is_cut_at_ten_a_minute,
);

/// Create, use, list with last use, rename, revoke, restore, delete.
async fn personal_access_token_from_creation_to_deletion(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "user-1".into(),
            name: "laptop".into(),
            scopes: vec!["repo:read".into(), "repo:write".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (token, secret) = (created.token.unwrap(), created.secret);

    // Use it.
    app.clock.advance(Duration::from_secs(60));
    let v = app.verify(&secret, &["repo:write"]).await;
    assert_eq!(v.verdict(), Verdict::Valid);
    let used = app.wait_for_last_used(&token.id, None).await;

    // The user's token page shows it with its last use.
    let page = app
        .list(pb::ListTokensRequest {
            owner: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.tokens.len(), 1);
    assert_eq!(page.tokens[0].last_used_time, Some(used));
    assert_eq!(page.tokens[0].display_hint, token.display_hint);

    // Rename.
    let mut renamed = token.clone();
    renamed.name = "work laptop".into();
    let renamed = app.update(renamed, &["name"]).await.unwrap();
    assert_eq!(renamed.name, "work laptop");
    assert_eq!(
        app.verify(&secret, &[]).await.token.unwrap().name,
        "work laptop"
    );

    // Revoke, then think better of it.
    app.revoke(&token.id, "suspicious activity").await.unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Revoked);
    let restored = app.restore(&token.id).await.unwrap();
    assert_eq!(restored.status(), TokenStatus::Active);
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);

    // Delete for good.
    app.delete(&token.id).await.unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Unknown);
    assert_code(app.get(&token.id).await, Code::NotFound);
    assert_eq!(
        app.event_kinds(&token.id).await,
        [
            EventKind::Created,
            EventKind::Updated,
            EventKind::Revoked,
            EventKind::Restored,
            EventKind::Deleted,
        ]
    );
}

/// Create with a 30-day expiry; near its end, renew with a 1-hour grace
/// period; the client rolls over within the hour.
async fn thirty_day_token_renewed_with_an_hour_of_grace(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_with_ttl("device-7", (30 * DAY) as i64).await;
    let (old, old_secret) = (created.token.unwrap(), created.secret);
    app.clock.advance(Duration::from_secs(29 * DAY));
    assert_eq!(app.verify(&old_secret, &[]).await.verdict(), Verdict::Valid);

    let (new, new_secret) = app.renew_with_grace(&old.id, 3600).await;
    assert_eq!(new.replaces, old.id);
    let new_life = new.expire_time.unwrap().seconds - new.create_time.unwrap().seconds;
    assert_eq!(new_life, (30 * DAY) as i64);

    // Half an hour later both secrets work: the fleet is rolling over.
    app.clock.advance(Duration::from_secs(1800));
    assert_eq!(app.verify(&old_secret, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    // After the hour only the new one does.
    app.clock.advance(Duration::from_secs(1800));
    assert_eq!(
        app.verify(&old_secret, &[]).await.verdict(),
        Verdict::Expired
    );
    assert_eq!(app.verify(&new_secret, &[]).await.verdict(), Verdict::Valid);
    // The old token cannot be renewed twice or restored.
    assert_code(app.restore(&old.id).await, Code::FailedPrecondition);
    assert_code(app.try_renew(&old.id).await, Code::FailedPrecondition);
    // And the new one expires thirty days after the renewal.
    app.clock.advance(Duration::from_secs(30 * DAY - 3600));
    assert_eq!(
        app.verify(&new_secret, &[]).await.verdict(),
        Verdict::Expired
    );
}

/// An account is suspended (its tokens stop working at once, cached or
/// not), then reinstated (they all work again, statuses untouched).
async fn owner_suspended_and_reinstated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (phone, phone_secret) = app.create_token("user-9", &["sync"]).await;
    let (_, cli_secret) = app.create_token("user-9", &["sync"]).await;
    assert_eq!(
        app.verify(&phone_secret, &["sync"]).await.verdict(),
        Verdict::Valid
    );

    let owner = app
        .disable_owner("user-9", "payment overdue")
        .await
        .unwrap();
    assert!(owner.disabled);
    assert_eq!(owner.token_counts.unwrap().active, 2);
    for s in [&phone_secret, &cli_secret] {
        assert_eq!(
            app.verify(s, &["sync"]).await.verdict(),
            Verdict::OwnerDisabled
        );
    }
    assert_eq!(
        app.get(&phone.id).await.unwrap().status(),
        TokenStatus::Active
    );

    let owner = app.enable_owner("user-9").await.unwrap();
    assert!(!owner.disabled);
    for s in [&phone_secret, &cli_secret] {
        assert_eq!(app.verify(s, &["sync"]).await.verdict(), Verdict::Valid);
    }
    let kinds: Vec<_> = app
        .events("", "user-9")
        .await
        .iter()
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::OwnerEnabled,
            EventKind::OwnerDisabled,
            EventKind::Created,
            EventKind::Created,
        ]
    );
}

/// A buggy script creates tokens in a loop: ten a minute get through.
async fn a_burst_of_creations_is_cut_at_ten_a_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..10 {
        app.create(pb::CreateTokenRequest {
            owner: "script".into(),
            name: format!("token {i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        app.clock.advance(Duration::from_secs(1));
    }
    let eleventh = app
        .create(pb::CreateTokenRequest {
            owner: "script".into(),
            name: "token 10".into(),
            ..Default::default()
        })
        .await;
    let status = assert_code(eleventh, Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("limits.create_per_owner_per_minute")
    );
    assert_eq!(
        app.get_owner("script")
            .await
            .unwrap()
            .token_counts
            .unwrap()
            .active,
        10
    );
    // A minute after the first, the next one goes through.
    app.clock.advance(Duration::from_secs(50));
    app.create(pb::CreateTokenRequest {
        owner: "script".into(),
        name: "token 10".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}
