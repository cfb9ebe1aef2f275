//! Verify: verdicts, their order, scopes, what costs a database lookup, and
//! the revoke-vs-fill race.

use std::time::Duration;

use latchkey::grpc::pb::{self, Verdict};
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(
    scopes_are_matched_exactly_or_by_a_wildcard_stem,
    malformed_tokens_are_rejected_without_a_lookup,
    unknown_tokens_are_cached_briefly,
    a_cache_hit_costs_no_lookup,
    verdicts_are_checked_in_the_documented_order,
    a_lookup_that_read_before_a_revoke_does_not_cache_the_stale_answer,
    a_lookup_that_read_before_a_delete_does_not_cache_the_stale_answer,
    verify_needs_no_credential,
);

mod lookups_survive_the_database_dropping_its_connections {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::lookups_survive_the_database_dropping_its_connections().await;
        }
    }
}

mod misses_waiting_together_each_get_their_own_answer {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::misses_waiting_together_each_get_their_own_answer().await;
        }
    }
}

mod one_connection_serves_lookups_and_admin_calls {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_available() {
            super::one_connection_serves_lookups_and_admin_calls().await;
        }
    }
}

async fn scopes_are_matched_exactly_or_by_a_wildcard_stem(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &["repo:read", "deploy:*"]).await;
    for (required, verdict) in [
        (vec![], Verdict::Valid),
        (vec!["repo:read"], Verdict::Valid),
        (vec!["deploy:prod", "deploy:staging:eu"], Verdict::Valid),
        (vec!["deploy:*"], Verdict::Valid),
        (vec!["repo:write"], Verdict::InsufficientScope),
        (vec!["deployment:x"], Verdict::InsufficientScope),
        (vec!["repo"], Verdict::InsufficientScope),
    ] {
        let v = app.verify(&secret, &required).await;
        assert_eq!(v.verdict(), verdict, "required {required:?}");
    }
    let v = app
        .verify(&secret, &["admin", "repo:read", "billing:x"])
        .await;
    assert_eq!(v.verdict(), Verdict::InsufficientScope);
    assert_eq!(v.missing_scopes, vec!["admin", "billing:x"]);
    assert_eq!(v.token.unwrap().scopes, vec!["repo:read", "deploy:*"]);
}

async fn malformed_tokens_are_rejected_without_a_lookup(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &[]).await;
    let mut typo = secret.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let other_prefix = secret.replacen("lk_", "gh_", 1);
    for bad in [
        "",
        "lk_",
        "Bearer x",
        &typo,
        &other_prefix,
        &secret[..secret.len() - 1],
        &format!("{secret} "),
    ] {
        let v = app.verify(bad, &[]).await;
        assert_eq!(v.verdict(), Verdict::Malformed, "{bad:?}");
        assert!(v.token.is_none());
    }
    assert_eq!(
        app.gate.lookups(),
        0,
        "a malformed token reached the database"
    );
}

async fn unknown_tokens_are_cached_briefly(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &[]).await;
    app.delete(&token.id).await.unwrap();
    // Well-formed, checksum right, but not in the database.
    for _ in 0..5 {
        let v = app.verify(&secret, &[]).await;
        assert_eq!(v.verdict(), Verdict::Unknown);
        assert!(v.token.is_none());
    }
    assert_eq!(app.gate.lookups(), 1);
}

async fn a_cache_hit_costs_no_lookup(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &["a"]).await;
    for _ in 0..10 {
        assert_eq!(app.verify(&secret, &["a"]).await.verdict(), Verdict::Valid);
    }
    assert_eq!(app.gate.lookups(), 1);
}

async fn verdicts_are_checked_in_the_documented_order(backend: Backend) {
    let app = spawn_app(backend).await;
    // Revoked and expired and lacking the scope: REVOKED.
    let a = app.create_with_ttl("u", 60).await;
    app.revoke(&a.token.unwrap().id, "").await.unwrap();
    // Expired and lacking the scope: EXPIRED.
    let b = app.create_with_ttl("u", 60).await;
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(
        app.verify(&a.secret, &["x"]).await.verdict(),
        Verdict::Revoked
    );
    let v = app.verify(&b.secret, &["x"]).await;
    assert_eq!(v.verdict(), Verdict::Expired);
    assert!(v.missing_scopes.is_empty());
    assert!(
        v.token.is_some(),
        "a known token is returned with every verdict"
    );
}

async fn a_lookup_that_read_before_a_revoke_does_not_cache_the_stale_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &[]).await;

    // Verify misses the cache, reads the token (active), and pauses before
    // caching what it read.
    let verifying = app.start_paused_verify(&secret).await;

    // Meanwhile the token is revoked, and the revoke returns.
    app.revoke(&token.id, "compromised").await.unwrap();

    // The paused lookup resumes; it answers from what it read before the
    // revoke, but must not leave that answer in the cache.
    app.gate.release();
    let first = verifying.await.unwrap().unwrap();
    assert_eq!(first.verdict(), Verdict::Valid);

    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        Verdict::Revoked,
        "the revoked token lives on in the cache"
    );
}

async fn a_lookup_that_read_before_a_delete_does_not_cache_the_stale_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, secret) = app.create_token("u", &[]).await;
    let verifying = app.start_paused_verify(&secret).await;
    app.delete(&token.id).await.unwrap();
    app.gate.release();
    verifying.await.unwrap().unwrap();
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Unknown);
}

async fn verify_needs_no_credential(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, secret) = app.create_token("u", &[]).await;
    // The helper's Verify carries no authorization header.
    assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
}

/// PostgreSQL only: an embedded SQLite file cannot become unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_never_a_verdict_on_postgres() {
    if !postgres_available() {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let (_, cached) = app.create_token("u", &[]).await;
    let (_, uncached) = app.create_token("u", &[]).await;
    assert_eq!(app.verify(&cached, &[]).await.verdict(), Verdict::Valid);

    let (admin_url, name) = app.db.postgres().unwrap();
    let admin = sea_orm::Database::connect(admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();

    let status = app.try_verify(&uncached, &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        !status.message().contains(name),
        "database text leaked: {}",
        status.message()
    );
    // What is already in memory still answers.
    assert_eq!(app.verify(&cached, &[]).await.verdict(), Verdict::Valid);

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    admin.close().await.ok();
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(v) = app.try_verify(&uncached, &[]).await {
            recovered = Some(v.verdict());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered, Some(Verdict::Valid));
}

/// Cache misses on PostgreSQL reuse held connections. When the server drops
/// every connection (a restart, a failover), calls answer VALID or, while the
/// dead connections are found out, UNAVAILABLE: never a wrong verdict, and
/// never for long.
async fn lookups_survive_the_database_dropping_its_connections() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.cache.capacity = 0;
        s.database_max_connections = 4;
    })
    .await;
    let (_, secret) = app.create_token("u", &[]).await;
    // Concurrent misses: both lanes take a connection and keep it.
    let concurrent = tokio::join!(
        app.verify(&secret, &[]),
        app.verify(&secret, &[]),
        app.verify(&secret, &[]),
        app.verify(&secret, &[]),
    );
    for v in [concurrent.0, concurrent.1, concurrent.2, concurrent.3] {
        assert_eq!(v.verdict(), Verdict::Valid);
    }

    app.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;

    let mut failures = 0;
    for _ in 0..20 {
        match app.try_verify(&secret, &[]).await {
            Ok(v) => assert_eq!(v.verdict(), Verdict::Valid),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                failures += 1;
            }
        }
    }
    // At most one per pooled connection: each dead one fails once.
    assert!(failures <= 4, "{failures} of 20 calls failed");
    for _ in 0..20 {
        assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
    }
}

/// Misses that wait for the one lane go to the database together: each
/// still gets the verdict of its own token, repeated digests included.
async fn misses_waiting_together_each_get_their_own_answer() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.cache.capacity = 0;
        s.database_max_connections = 2;
    })
    .await;
    let (_, valid) = app.create_token("u", &["read"]).await;
    let (revoked, revoked_secret) = app.create_token("u", &["read"]).await;
    app.revoke(&revoked.id, "leaked").await.unwrap();
    let (deleted, unknown) = app.create_token("u", &["read"]).await;
    app.delete(&deleted.id).await.unwrap();
    let (_, disabled) = app.create_token("gone", &["read"]).await;
    app.disable_owner("gone", "left").await.unwrap();
    let cases = [
        (valid.clone(), "read", Verdict::Valid),
        (valid, "write", Verdict::InsufficientScope),
        (revoked_secret, "read", Verdict::Revoked),
        (unknown, "read", Verdict::Unknown),
        (disabled, "read", Verdict::OwnerDisabled),
    ];

    for _ in 0..3 {
        let mut calls = tokio::task::JoinSet::new();
        for (i, (secret, scope, verdict)) in cases.iter().cycle().take(200).enumerate() {
            let mut client = app.verifier.clone();
            let request = pb::VerifyRequest {
                token: secret.clone(),
                required_scopes: vec![(*scope).to_owned()],
                cost: None,
                client: None,
            };
            let verdict = *verdict;
            calls.spawn(async move {
                let got = client.verify(request).await.expect("Verify").into_inner();
                (i, got.verdict(), verdict)
            });
        }
        while let Some(done) = calls.join_next().await {
            let (i, got, want) = done.unwrap();
            assert_eq!(got, want, "call {i}");
        }
    }
}

/// With a pool of one, no connection is kept for lookups: admin calls after
/// a cache miss still get the connection.
async fn one_connection_serves_lookups_and_admin_calls() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.cache.capacity = 0;
        s.database_max_connections = 1;
    })
    .await;
    for _ in 0..3 {
        let (token, secret) = app.create_token("u", &[]).await;
        assert_eq!(app.verify(&secret, &[]).await.verdict(), Verdict::Valid);
        assert_eq!(app.get(&token.id).await.unwrap().id, token.id);
    }
}
