//! Unknown-token floods: every well-formed random token is a cache miss.
//! Lookups start at a bounded rate (a miss past it waits its turn) and
//! misses in progress are bounded (one more is answered UNAVAILABLE at once,
//! without a lookup), while cached tokens keep verifying and admin calls
//! keep their database connections.

use std::time::Duration;

use latchkey::grpc::pb::{Verdict, VerifyRequest};
use latchkey::token::Prefix;
use latchkey::token::format::generate;
use tonic::Code;

use crate::helpers::*;
use crate::metrics::{scrape, value};
use crate::on_both_databases;

on_both_databases!(
    misses_past_max_pending_are_refused_at_once_and_cached_tokens_keep_verifying,
    lookups_past_max_per_second_wait_their_turn,
);

/// A well-formed token that was never issued.
fn unknown_token() -> String {
    generate(&Prefix::new("lk").unwrap())
        .unwrap()
        .expose()
        .to_owned()
}

fn verify_call(
    app: &TestApp,
    token: String,
) -> tokio::task::JoinHandle<Result<Verdict, tonic::Status>> {
    let mut client = app.verifier.clone();
    tokio::spawn(async move {
        let request = VerifyRequest {
            token,
            required_scopes: vec![],
            cost: None,
            client: None,
        };
        client
            .verify(request)
            .await
            .map(|r| r.into_inner().verdict())
    })
}

async fn misses_past_max_pending_are_refused_at_once_and_cached_tokens_keep_verifying(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.lookups.max_pending = 4;
        s.lookups.max_per_second = 0;
    })
    .await;
    let (token, secret) = app.create_token("alice", &["read"]).await;
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );

    // Four misses hold every place, stuck in a slow database.
    app.gate.hold();
    let held: Vec<_> = (0..4).map(|_| verify_call(&app, unknown_token())).collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.gate.inside() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("four lookups reach the database");

    // A fifth is refused at once, and makes no lookup.
    let lookups = app.gate.lookups();
    let fifth = tokio::time::timeout(Duration::from_secs(2), verify_call(&app, unknown_token()))
        .await
        .expect("refused at once, not queued")
        .unwrap()
        .unwrap_err();
    assert_eq!(fifth.code(), Code::Unavailable, "{fifth:?}");
    assert!(fifth.message().contains("retry"), "{}", fifth.message());
    assert_eq!(app.gate.lookups(), lookups, "the refusal made no lookup");

    // Meanwhile a cached token verifies and admin calls are served.
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    assert_eq!(app.get(&token.id).await.unwrap().name, token.name);
    let samples = scrape(&app).await;
    assert_eq!(value(&samples, "latchkey_lookups_refused_total"), 1.0);

    // Once the database answers, the held misses get their verdicts and a
    // place is free again.
    app.gate.open();
    for call in held {
        assert_eq!(call.await.unwrap().unwrap(), Verdict::Unknown);
    }
    assert_eq!(app.gate.most_inside(), 4);
    let again = verify_call(&app, unknown_token()).await.unwrap();
    assert_eq!(again.unwrap(), Verdict::Unknown);
}

async fn lookups_past_max_per_second_wait_their_turn(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.lookups.max_pending = 15;
        s.lookups.max_per_second = 10;
    })
    .await;
    let (_, secret) = app.create_token("alice", &["read"]).await;
    // The first Verify of a token is a lookup too: the one the bucket
    // lends at once (a hundredth of ten a second, at least one).
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );

    // Forty misses at once, their lookups held in a slow database: one
    // starts every 100 ms, and 25 are refused at once, fifteen being in
    // progress.
    app.gate.hold();
    let lookups = app.gate.lookups();
    let started = std::time::Instant::now();
    let flood: Vec<_> = (0..40)
        .map(|_| verify_call(&app, unknown_token()))
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.gate.inside() < 15 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("fifteen lookups start");
    let paced = started.elapsed();
    assert!(
        paced >= Duration::from_millis(450),
        "15 lookups started in {paced:?}"
    );
    assert_eq!(
        app.verify(&secret, &["read"]).await.verdict(),
        Verdict::Valid
    );
    app.gate.open();

    let (mut unknown, mut refused) = (0, 0);
    for call in flood {
        match call.await.unwrap() {
            Ok(verdict) => {
                assert_eq!(verdict, Verdict::Unknown);
                unknown += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((unknown, refused), (15, 25));
    assert_eq!(
        app.gate.lookups() - lookups,
        15,
        "every refusal made no lookup"
    );
    let samples = scrape(&app).await;
    assert_eq!(value(&samples, "latchkey_lookups_refused_total"), 25.0);
}

/// A flood of unknown tokens at four times `lookups.max_per_second`, more
/// than `max_pending` of them waiting: tokens the cache knows are read again
/// ahead of it, as their answers near their end (a token in steady use) and
/// once they have lapsed (one used every few seconds), and never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_tokens_never_refuses_a_known_token_whose_answer_lapses() {
    let seconds: u64 = std::env::var("LATCHKEY_TEST_FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.lookups.max_pending = 16;
        s.lookups.max_per_second = 50;
        s.cache.ttl = Duration::from_secs(3);
    })
    .await;
    let (_, steady) = app.create_token("alice", &["read"]).await;
    let (_, sparse) = app.create_token("bob", &["read"]).await;
    // Both in use before the flood starts.
    for secret in [&steady, &sparse] {
        assert_eq!(
            app.verify(secret, &["read"]).await.verdict(),
            Verdict::Valid
        );
    }

    let stop = tokio_util::sync::CancellationToken::new();
    let flood = tokio::spawn({
        let (app_client, stop) = (app.verifier.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let (mut sent, mut refused) = (0u64, 0u64);
            let mut calls = tokio::task::JoinSet::new();
            while !stop.is_cancelled() {
                tick.tick().await;
                let mut client = app_client.clone();
                calls.spawn(async move {
                    client
                        .verify(VerifyRequest {
                            token: unknown_token(),
                            required_scopes: vec![],
                            cost: None,
                            client: None,
                        })
                        .await
                        .is_err()
                });
                sent += 1;
                while let Some(done) = calls.try_join_next() {
                    refused += u64::from(done.unwrap());
                }
            }
            while let Some(done) = calls.join_next().await {
                refused += u64::from(done.unwrap());
            }
            (sent, refused)
        }
    });

    let started = std::time::Instant::now();
    let (mut calls, mut unavailable) = (0, 0);
    let mut sparse_at = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut check = |result: Result<latchkey::grpc::pb::VerifyResponse, tonic::Status>| {
            calls += 1;
            match result {
                Ok(reply) => assert_eq!(reply.verdict(), Verdict::Valid),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    unavailable += 1;
                }
            }
        };
        check(app.try_verify(&steady, &["read"]).await);
        if sparse_at.elapsed() >= Duration::from_millis(3_500) {
            sparse_at = std::time::Instant::now();
            check(app.try_verify(&sparse, &["read"]).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let (sent, refused) = flood.await.unwrap();
    eprintln!(
        "{seconds} s: known tokens {calls} calls, {unavailable} UNAVAILABLE; flood {sent} calls, {refused} refused"
    );
    assert!(refused > sent / 2, "the flood was not past the bounds");
    assert_eq!(unavailable, 0, "a known token was refused during the flood");
}
