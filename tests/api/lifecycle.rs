//! Create, get, update, revoke, restore, delete: what an admin does, and what
//! Verify says right after.

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::grpc::pb::{self, TokenStatus, Verdict};
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    a_created_token_is_returned_with_its_secret_once_and_verifies,
    a_missing_token_is_not_found,
    update_changes_only_the_masked_fields_and_verify_sees_it_at_once,
    update_without_a_mask_changes_the_fields_that_are_set,
    revoke_is_immediate_even_for_a_cached_token,
    revoke_is_idempotent,
    restore_brings_a_revoked_token_back,
    restore_leaves_an_active_token_unchanged,
    an_expired_token_cannot_be_restored,
    delete_is_permanent_and_verifies_as_unknown_at_once,
    a_token_expires_after_its_ttl,
    a_token_expires_at_its_expire_time,
    verify_records_last_use_written_behind,
);

async fn a_created_token_is_returned_with_its_secret_once_and_verifies(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "user-42".into(),
            name: "ci deploy".into(),
            description: "deploys from CI".into(),
            scopes: vec!["repo:read".into(), "deploy:*".into()],
            metadata: BTreeMap::from([("team".into(), "infra".into())]),
            expiration: Some(pb::create_token_request::Expiration::Ttl(duration(
                30 * DAY as i64,
            ))),
            idle_timeout: None,
            credits: None,
            rate_limits: Vec::new(),
        })
        .await
        .unwrap();
    let token = created.token.unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("lk_") && secret.len() == 3 + 43 + 6);
    assert_eq!(
        token.display_hint,
        format!("lk_…{}", &secret[secret.len() - 4..])
    );
    assert_eq!(token.status(), TokenStatus::Active);
    assert_eq!(token.owner, "user-42");
    assert_eq!(token.scopes, vec!["repo:read", "deploy:*"]);
    assert!(uuid::Uuid::parse_str(&token.id).unwrap().get_version_num() == 7);
    let expire = token.expire_time.unwrap().seconds - token.create_time.unwrap().seconds;
    assert_eq!(expire, 30 * DAY as i64);
    assert!(token.last_used_time.is_none());

    // Never again: GetToken and ListTokens know nothing of the secret.
    let fetched = app.get(&token.id).await.unwrap();
    assert_eq!(fetched, token);
    let listed = app.list_all().await;
    assert!(!format!("{listed:?}{fetched:?}").contains(&secret));

    let v = app.verify(&secret, &["deploy:prod", "repo:read"]).await;
    assert_eq!(v.verdict(), Verdict::Valid);
    let seen = v.token.unwrap();
    assert_eq!(seen.id, token.id);
    assert_eq!(seen.metadata["team"], "infra");
}

async fn a_missing_token_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let absent = uuid::Uuid::now_v7().to_string();
    assert_code(app.get(&absent).await, Code::NotFound);
    assert_code(app.revoke(&absent, "").await, Code::NotFound);
    assert_code(app.restore(&absent).await, Code::NotFound);
    assert_code(app.delete(&absent).await, Code::NotFound);
    let ghost = pb::Token {
        id: absent,
        name: "x".into(),
        ..Default::default()
    };
    assert_code(app.update(ghost, &["name"]).await, Code::NotFound);
}

async fn update_changes_only_the_masked_fields_and_verify_sees_it_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "u".into(),
            name: "old name".into(),
            description: "old description".into(),
            metadata: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = created.token.unwrap();
    // Warm the cache, so the update must invalidate it.
    assert_eq!(
        app.verify(&created.secret, &[]).await.token.unwrap().name,
        "old name"
    );

    app.clock.advance(Duration::from_secs(5));
    let change = pb::Token {
        id: token.id.clone(),
        name: "new name".into(),
        description: "ignored: not in the mask".into(),
        metadata: BTreeMap::from([("c".into(), "3".into())]),
        ..Default::default()
    };
    let updated = app.update(change, &["name", "metadata"]).await.unwrap();
    assert_eq!(updated.name, "new name");
    assert_eq!(updated.description, "old description");
    assert_eq!(updated.metadata, BTreeMap::from([("c".into(), "3".into())]));
    assert!(updated.update_time.unwrap().seconds > token.update_time.unwrap().seconds);
    assert_eq!(updated.create_time, token.create_time);

    let seen = app.verify(&created.secret, &[]).await.token.unwrap();
    assert_eq!(seen.name, "new name");
    assert_eq!(seen.metadata, updated.metadata);
    // Everything but the last use, which the flusher may write meanwhile.
    let fetched = app.get(&token.id).await.unwrap();
    assert_eq!(
        pb::Token {
            last_used_time: None,
            ..fetched
        },
        pb::Token {
            last_used_time: None,
            ..updated
        }
    );

    let everything = pb::Token {
        id: token.id.clone(),
        ..Default::default()
    };
    let cleared = app.update(everything, &["*"]).await.unwrap();
    assert_eq!(
        (cleared.name.as_str(), cleared.description.as_str()),
        ("", "")
    );
    assert!(cleared.metadata.is_empty());
}

async fn update_without_a_mask_changes_the_fields_that_are_set(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &[]).await;
    let change = pb::Token {
        id: token.id.clone(),
        description: "now described".into(),
        ..Default::default()
    };
    let updated = app.update(change, &[]).await.unwrap();
    assert_eq!(updated.description, "now described");
    assert_eq!(updated.name, token.name);
}

async fn revoke_is_immediate_even_for_a_cached_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &["read"]).await;
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );

    let revoked = app.revoke(&token.id, "leaked in a log").await.unwrap();
    assert_eq!(revoked.status(), TokenStatus::Revoked);
    assert_eq!(revoked.revoke_reason, "leaked in a log");
    assert!(revoked.revoke_time.is_some());

    let v = app.verify(&secret, &["read"]).await;
    assert_eq!(v.verdict(), Verdict::Revoked);
    assert_eq!(v.token.unwrap().status(), TokenStatus::Revoked);
}

async fn revoke_is_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &[]).await;
    let first = app.revoke(&token.id, "first").await.unwrap();
    app.clock.advance(Duration::from_secs(60));
    let second = app.revoke(&token.id, "second").await.unwrap();
    assert_eq!(second, first, "a second revoke changed the token");
}

async fn restore_brings_a_revoked_token_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &[]).await;
    app.revoke(&token.id, "oops").await.unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Revoked);

    let restored = app.restore(&token.id).await.unwrap();
    assert_eq!(restored.status(), TokenStatus::Active);
    assert!(restored.revoke_time.is_none());
    assert_eq!(restored.revoke_reason, "");
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
}

async fn restore_leaves_an_active_token_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.create_token("u", &[]).await;
    app.clock.advance(Duration::from_secs(10));
    assert_eq!(app.restore(&token.id).await.unwrap(), token);
}

async fn an_expired_token_cannot_be_restored(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_with_ttl("u", 3600).await;
    let id = created.token.unwrap().id;
    // Revoked, then its expiry passes: restoring would only make it EXPIRED.
    app.revoke(&id, "").await.unwrap();
    app.clock.advance(Duration::from_secs(3600));
    assert_code(app.restore(&id).await, Code::FailedPrecondition);
    assert_eq!(app.get(&id).await.unwrap().status(), TokenStatus::Revoked);

    let (plain, _) = app.create_token("u", &[]).await;
    let expiring = app.create_with_ttl("u", 60).await.token.unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_code(app.restore(&expiring.id).await, Code::FailedPrecondition);
    assert_eq!(
        app.restore(&plain.id).await.unwrap().status(),
        TokenStatus::Active
    );
}

async fn delete_is_permanent_and_verifies_as_unknown_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &[]).await;
    app.revoke(&token.id, "").await.unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Revoked);

    app.delete(&token.id).await.unwrap();
    let v = app.verify(&secret, &[]).await;
    assert_eq!(v.verdict(), Verdict::Unknown);
    assert!(v.token.is_none());
    assert_code(app.get(&token.id).await, Code::NotFound);
    assert_code(app.delete(&token.id).await, Code::NotFound);
    assert!(app.list_all().await.is_empty());
}

async fn a_token_expires_after_its_ttl(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_with_ttl("u", 3600).await;
    let id = created.token.unwrap().id;
    app.clock.advance(Duration::from_secs(3599));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Valid
    );
    app.clock.advance(Duration::from_secs(1));
    let v = app.verify(&created.secret, &[]).await;
    assert_eq!(v.verdict(), Verdict::Expired);
    assert_eq!(v.token.unwrap().status(), TokenStatus::Expired);
    assert_eq!(app.get(&id).await.unwrap().status(), TokenStatus::Expired);
}

async fn a_token_expires_at_its_expire_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let at = now_plus(&app.clock, Duration::from_secs(90 * DAY));
    let created = app
        .create(pb::CreateTokenRequest {
            owner: "u".into(),
            expiration: Some(pb::create_token_request::Expiration::ExpireTime(at)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.token.unwrap().expire_time, Some(at));
    app.clock.advance(Duration::from_secs(90 * DAY));
    assert_eq!(
        app.verify(&created.secret, &[]).await.verdict(),
        Verdict::Expired
    );
}

async fn verify_records_last_use_written_behind(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &["a"]).await;
    let (unused, _) = app.create_token("u", &[]).await;
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(app.verify(&secret, &["a"]).await.verdict(), Verdict::Valid);
    let used_at = app.wait_for_last_used(&token.id, None).await;
    assert_eq!(used_at.seconds - token.create_time.unwrap().seconds, 120);

    let listed = app
        .list(pb::ListTokensRequest {
            owner: "u".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tokens;
    let by_id = |id: &str| listed.iter().find(|t| t.id == id).unwrap().clone();
    assert_eq!(by_id(&token.id).last_used_time, Some(used_at));
    assert_eq!(by_id(&unused.id).last_used_time, None);

    // A later use moves it forward; a revoked token's rejected use does not.
    app.clock.advance(Duration::from_secs(60));
    app.verify(&secret, &["a"]).await;
    let later = app.wait_for_last_used(&token.id, Some(used_at)).await;
    assert_eq!(later.seconds, used_at.seconds + 60);
    app.revoke(&token.id, "").await.unwrap();
    app.clock.advance(Duration::from_secs(60));
    app.verify(&secret, &["a"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.get(&token.id).await.unwrap().last_used_time,
        Some(later)
    );
}
