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
