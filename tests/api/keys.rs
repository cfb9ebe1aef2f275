//! HMAC key rotation, end to end: tokens created under key 1 keep working
//! once key 2 is primary, move to key 2 as they are used, and ListKeys
//! counts down to zero, after which key 1 can go.

use std::time::{Duration, Instant};

use latchkey::config::Sensitive;
use latchkey::grpc::pb::{self, Verdict};

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(tokens_move_to_a_new_primary_key_as_they_are_used);

const KEY_2: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";

async fn list_keys(app: &TestApp) -> Vec<pb::KeyUsage> {
    app.admin
        .clone()
        .list_keys(app.admin_request(pb::ListKeysRequest {}))
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
}

/// (primary, configured, tokens) of each listed key, in order.
async fn usage(app: &TestApp) -> Vec<(bool, bool, i64)> {
    list_keys(app)
        .await
        .iter()
        .map(|k| (k.primary, k.configured, k.token_count))
        .collect()
}

async fn tokens_move_to_a_new_primary_key_as_they_are_used(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, used) = app.create_token("u", &[]).await;
    let (_, later) = app.create_token("u", &[]).await;
    let (old_revoked, old_revoked_secret) = app.create_token("u", &[]).await;
    let key_1 = list_keys(&app).await[0].id.clone();
    assert_eq!(usage(&app).await, [(true, true, 3)]);

    // Key 2 becomes primary; key 1 is kept for the tokens stored under it.
    let (db, mut settings) = app.stop().await;
    settings.hmac_key = None;
    settings.hmac_keys = Some(Sensitive::new(format!("{KEY_2},{HMAC_KEY}")));
    let app = spawn_app_on(db, settings.clone()).await;
    let keys = list_keys(&app).await;
    assert_ne!(keys[0].id, key_1);
    assert_eq!(keys[1].id, key_1);
    assert_eq!(usage(&app).await, [(true, true, 0), (false, true, 3)]);

    // Old tokens work, and a change to one still reaches Verify.
    assert_eq!(app.verify(&used, &[]).await.verdict(), Verdict::Valid);
    app.revoke(&old_revoked.id, "rotated out").await.unwrap();
    assert_eq!(
        app.verify(&old_revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
    // New tokens are digested with key 2.
    let (_, fresh) = app.create_token("u", &[]).await;
    assert_eq!(app.verify(&fresh, &[]).await.verdict(), Verdict::Valid);

    // Used tokens move to key 2 with the next flush; the rest wait.
    let moved = wait_for(&app, |u| u[1].2 == 1).await;
    assert_eq!(moved, [(true, true, 3), (false, true, 1)]);
    assert_eq!(app.verify(&used, &[]).await.verdict(), Verdict::Valid);
    assert_eq!(app.verify(&later, &[]).await.verdict(), Verdict::Valid);
    let drained = wait_for(&app, |u| u[1].2 == 0).await;
    assert_eq!(drained, [(true, true, 4), (false, true, 0)]);

    // With nothing left on it, key 1 goes: every token still works.
    let (db, mut settings) = app.stop().await;
    settings.hmac_keys = Some(Sensitive::new(KEY_2));
    let app = spawn_app_on(db, settings).await;
    assert_eq!(usage(&app).await, [(true, true, 4)]);
    for secret in [&used, &later, &fresh] {
        assert_eq!(app.verify(secret, &[]).await.verdict(), Verdict::Valid);
    }
    assert_eq!(
        app.verify(&old_revoked_secret, &[]).await.verdict(),
        Verdict::Revoked
    );
}

/// Polls ListKeys until `done` holds (the flusher runs every 100 ms here).
async fn wait_for(
    app: &TestApp,
    done: impl Fn(&[(bool, bool, i64)]) -> bool,
) -> Vec<(bool, bool, i64)> {
    let started = Instant::now();
    loop {
        let u = usage(app).await;
        if done(&u) {
            return u;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{u:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
