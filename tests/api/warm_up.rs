//! Warming at start: a restarted replica reads the tokens used within
//! `cache.warm_window` in bulk and is ready only then, so its first Verify
//! of each is a cache hit; changes committed while it warms are never
//! served stale; a replica that cannot warm serves cold after
//! `cache.warm_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::clock::Clock as _;
use latchkey::grpc::pb::{self, Verdict};

use crate::helpers::*;
use crate::metrics::{scrape, value};
use crate::on_both_databases;

on_both_databases!(
    a_restarted_replica_answers_recently_used_tokens_from_its_cache,
    changes_committed_while_a_replica_warms_are_never_served_stale,
    a_replica_that_cannot_warm_serves_cold_after_the_timeout,
    a_replica_whose_warming_fails_outright_still_turns_ready,
);

/// Settings for replicas that see each other's changes quickly.
fn settings(db: &TestDb) -> latchkey::Settings {
    let mut s = test_settings(db);
    s.changes.poll_interval = Duration::from_millis(100);
    s
}

/// Creates a token for `owner` with scopes read and write and presents it
/// once, so that its last use is written.
async fn used_token(app: &TestApp, owner: &str) -> (pb::Token, String) {
    let (token, secret) = app.create_token(owner, &["read", "write"]).await;
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    app.wait_for_last_used(&token.id, None).await;
    (token, secret)
}

async fn a_restarted_replica_answers_recently_used_tokens_from_its_cache(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let app = spawn_app_on(Arc::clone(&db), settings(&db)).await;
    let mut recent = Vec::new();
    for i in 0..20 {
        recent.push(used_token(&app, &format!("recent-{}", i % 4)).await.1);
    }
    let (_, old) = used_token(&app, "old").await;
    let (_, never) = app.create_token("never", &["read"]).await;
    // Last used two days ago: outside the default window of a day.
    let two_days_ago = app
        .clock
        .now()
        .saturating_sub(Duration::from_secs(2 * 86_400));
    app.execute_sql(&format!(
        "UPDATE tokens SET last_used_time = {} WHERE owner = 'old'",
        two_days_ago.as_micros()
    ))
    .await;

    let app = app.restart().await;
    assert_eq!(app.readiness().await, ServingStatus::Serving);
    let metrics = scrape(&app).await;
    assert_eq!(value(&metrics, "latchkey_cache_warmed_tokens"), 20.0);
    assert!(value(&metrics, "latchkey_cache_warm_seconds") > 0.0);
    for secret in &recent {
        assert_eq!(
            app.verify(secret, &["read"]).await.verdict(),
            Verdict::Valid
        );
    }
    assert_eq!(app.gate.lookups(), 0, "every recently used token was a hit");
    assert_eq!(app.verify(&old, &["read"]).await.verdict(), Verdict::Valid);
    assert_eq!(
        app.verify(&never, &["read"]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(
        app.gate.lookups(),
        2,
        "the others were read on their first use"
    );
    assert!(captured_logs().contains("cache warmed"));
}

async fn changes_committed_while_a_replica_warms_are_never_served_stale(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let one = spawn_app_on(Arc::clone(&db), settings(&db)).await;
    let (revoked, revoked_secret) = used_token(&one, "revoked").await;
    let (_, disabled_secret) = used_token(&one, "disabled").await;
    let (deleted, deleted_secret) = used_token(&one, "deleted").await;
    let (_, gone_secret) = used_token(&one, "gone").await;
    let (restored, restored_secret) = used_token(&one, "restored").await;
    one.revoke(&restored.id, "by mistake").await.unwrap();
    let (renewed, renewed_secret) = used_token(&one, "renewed").await;
    let (local, local_secret) = used_token(&one, "local").await;
    let mut untouched = Vec::new();
    for _ in 0..5 {
        untouched.push(used_token(&one, "untouched").await.1);
    }

    // The second replica reads them (all VALID but one REVOKED), then waits
    // before caching what it read.
    let gate = Arc::new(MissGate::default());
    gate.arm();
    let two = try_spawn_app_warming(Arc::clone(&db), settings(&db), Some(gate.hook()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), gate.reached())
        .await
        .expect("warming read the tokens");
    assert_eq!(
        two.liveness().await,
        ServingStatus::Serving,
        "alive throughout"
    );
    assert_eq!(
        two.readiness().await,
        ServingStatus::NotServing,
        "not ready while warming"
    );

    one.revoke(&revoked.id, "gone").await.unwrap();
    one.disable_owner("disabled", "left").await.unwrap();
    one.delete(&deleted.id).await.unwrap();
    one.delete_owner_tokens("gone").await.unwrap();
    one.restore(&restored.id).await.unwrap();
    one.try_renew(&renewed.id).await.unwrap();
    // And one through the warming replica itself.
    two.revoke(&local.id, "gone").await.unwrap();
    gate.release();
    let started = Instant::now();
    two.until_ready().await;
    assert!(started.elapsed() < Duration::from_secs(10));

    // Right after turning ready, with no further wait.
    let verdicts = [
        (&revoked_secret, Verdict::Revoked),
        (&disabled_secret, Verdict::OwnerDisabled),
        (&deleted_secret, Verdict::Unknown),
        (&gone_secret, Verdict::Unknown),
        (&restored_secret, Verdict::Valid),
        (&renewed_secret, Verdict::Revoked),
        (&local_secret, Verdict::Revoked),
    ];
    for (secret, expected) in verdicts {
        assert_eq!(two.verify(secret, &["read"]).await.verdict(), expected);
    }
    let lookups = two.gate.lookups();
    for secret in &untouched {
        assert_eq!(
            two.verify(secret, &["read"]).await.verdict(),
            Verdict::Valid
        );
    }
    assert_eq!(two.gate.lookups(), lookups, "the others were warmed");
}

async fn a_replica_that_cannot_warm_serves_cold_after_the_timeout(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let one = spawn_app_on(Arc::clone(&db), settings(&db)).await;
    let (_, secret) = used_token(&one, "alice").await;

    // Warming never gets past its read.
    let gate = Arc::new(MissGate::default());
    gate.hold();
    let mut s = settings(&db);
    s.cache.warm_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let two = try_spawn_app_warming(Arc::clone(&db), s, Some(gate.hook()))
        .await
        .unwrap();
    assert_eq!(two.liveness().await, ServingStatus::Serving);
    assert_eq!(two.readiness().await, ServingStatus::NotServing);
    // Verify answers meanwhile, from the database.
    assert_eq!(
        two.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    two.until_ready().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(captured_logs().contains("could not warm the cache within cache.warm_timeout"));
    let metrics = scrape(&two).await;
    assert_eq!(value(&metrics, "latchkey_cache_warmed_tokens"), 0.0);
    assert!(value(&metrics, "latchkey_cache_warm_seconds") >= 1.0);
    assert_eq!(
        two.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    gate.open();
}

async fn a_replica_whose_warming_fails_outright_still_turns_ready(backend: Backend) {
    let db = Arc::new(TestDb::new(backend).await);
    let one = spawn_app_on(Arc::clone(&db), settings(&db)).await;
    let (_, secret) = used_token(&one, "alice").await;
    // The warming task dies (a bug, say) between its read and its caching.
    let hook: latchkey::verifier::MissHook = Arc::new(|| {
        Box::pin(async {
            if std::hint::black_box(true) {
                panic!("warming failed");
            }
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    });
    let two = try_spawn_app_warming(Arc::clone(&db), settings(&db), Some(hook))
        .await
        .unwrap();
    // Ready long before cache.warm_timeout (30 s), with a cold cache.
    tokio::time::timeout(Duration::from_secs(10), two.until_ready())
        .await
        .expect("ready without waiting for the timeout");
    assert_eq!(
        two.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(two.gate.lookups(), 1, "a cold cache");
}
