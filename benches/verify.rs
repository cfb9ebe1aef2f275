//! The in-process Verify path, piece by piece and whole: shape and checksum,
//! HMAC digest, cache lookup, response encoding, and `Verifier::verify` on a
//! cache hit (no database). Run with `cargo bench --bench verify`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::auth::Actor;
use latchkey::cache::{CacheConfig, Cached, VerifyCache};
use latchkey::clock::SystemClock;
use latchkey::lifecycle::{Expiry, Lifecycle, Limits, NewToken, Policy, SelfRenew, Settings};
use latchkey::store::Store;
use latchkey::token::{Prefix, TokenKey, format};
use latchkey::usage::LastUsed;
use latchkey::verifier::{Verdict, Verification, Verifier};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn cache_config() -> CacheConfig {
    CacheConfig {
        capacity: 100_000,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
    }
}

fn pieces(c: &mut Criterion) {
    let prefix = Prefix::default();
    let key = TokenKey::from_encoded(KEY).unwrap();
    let secret = format::generate(&prefix).unwrap();
    let token = secret.expose();

    c.bench_function("parse: shape and checksum", |b| {
        b.iter(|| format::is_well_formed(&prefix, black_box(token)));
    });
    c.bench_function("digest: HMAC-SHA256", |b| {
        b.iter(|| key.digest(black_box(token)))
    });

    let cache: VerifyCache<u64> = VerifyCache::new(cache_config());
    let digest = key.digest(token);
    let ticket = cache.begin_fill(&digest);
    cache.complete_fill(ticket, digest, Cached::Known(Arc::new(7)));
    c.bench_function("cache: get (hit)", |b| {
        b.iter(|| cache.get(black_box(&digest)))
    });
}

fn verify_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (verifier, secret) = rt.block_on(async {
        let store = Store::connect("sqlite::memory:", 1).await.unwrap();
        store.migrate().await.unwrap();
        let key = TokenKey::from_encoded(KEY).unwrap();
        let clock = Arc::new(SystemClock);
        let verifier = Arc::new(Verifier::new(
            Prefix::default(),
            key.clone(),
            cache_config(),
            store.clone(),
            Arc::new(LastUsed::new()),
            clock.clone(),
            latchkey::grpc::render_token,
        ));
        let lifecycle = Lifecycle::new(
            store,
            verifier.clone() as Arc<dyn latchkey::verifier::Invalidate>,
            clock,
            Settings {
                key,
                prefix: Prefix::default(),
                policy: Policy::default(),
                limits: Limits::default(),
                self_renew: SelfRenew::default(),
            },
        );
        let (_, secret) = lifecycle
            .create(
                NewToken {
                    owner: "bench".into(),
                    name: "bench".into(),
                    description: String::new(),
                    scopes: vec!["repo:read".into(), "deploy:*".into()],
                    metadata: [("team".to_owned(), "infra".to_owned())].into(),
                    expiry: Expiry::Never,
                    idle_timeout: None,
                    credits: None,
                    rate_limits: Vec::new(),
                },
                Actor::Admin,
            )
            .await
            .unwrap();
        // Warm the cache.
        let v = verifier.verify(secret.expose(), &[]).await.unwrap();
        assert_eq!(v.verdict, Verdict::Valid);
        (verifier, secret)
    });
    let required = vec!["deploy:prod".to_owned()];
    let token = secret.expose().to_owned();

    c.bench_function("verify: cache hit, one scope", |b| {
        b.to_async(&rt).iter(|| async {
            verifier
                .verify(black_box(&token), black_box(&required))
                .await
                .unwrap()
        });
    });
    // A typo in the checksum: rejected before any digest or lookup.
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let malformed = format!("{}{last}", &token[..token.len() - 1]);
    c.bench_function("verify: malformed", |b| {
        b.to_async(&rt)
            .iter(|| async { verifier.verify(black_box(&malformed), &[]).await.unwrap() });
    });
}

/// The response to a hit: writing the bytes encoded at fill time behind the
/// verdict, against building the message field by field and encoding it.
fn response_encoding(c: &mut Criterion) {
    use latchkey::grpc::{VerifyReply, pb};
    use latchkey::token::{Status, TokenRecord};
    use latchkey::verifier::{Known, Snapshot};
    use prost::Message as _;

    let record = TokenRecord {
        name: "laptop".into(),
        scopes: vec!["repo:read".into(), "deploy:*".into()],
        metadata: [("team".to_owned(), "infra".to_owned())].into(),
        display_hint: "lk_…abcd".into(),
        ..TokenRecord::new(
            uuid::Uuid::now_v7(),
            "user-1234".into(),
            latchkey::clock::Timestamp::from_micros(1_795_000_000_000_000),
        )
    };
    let snapshot = Arc::new(Snapshot::new(&record, false, latchkey::grpc::render_token));
    let mut buf = Vec::with_capacity(512);
    c.bench_function("response: pre-encoded token (hit path)", |b| {
        b.iter(|| {
            buf.clear();
            let reply = VerifyReply::new(Verification {
                verdict: Verdict::Valid,
                token: Some(Known {
                    snapshot: Arc::clone(&snapshot),
                    status: Status::Active,
                }),
                missing_scopes: Vec::new(),
                credits_remaining: None,
                rate: None,
                retry_after: None,
            });
            reply.encode(&mut buf).unwrap();
            black_box(&buf);
        });
    });
    let token = pb::Token::decode(snapshot.rendered()).unwrap();
    c.bench_function("response: message built per call", |b| {
        b.iter(|| {
            buf.clear();
            let reply = pb::VerifyResponse {
                verdict: pb::Verdict::Valid as i32,
                token: Some(pb::Token {
                    status: pb::TokenStatus::Active as i32,
                    ..black_box(&token).clone()
                }),
                missing_scopes: Vec::new(),
                credits_remaining: None,
                rate_limit: None,
                retry_after: None,
            };
            reply.encode(&mut buf).unwrap();
            black_box(&buf);
        });
    });
}

/// The same hit on a cache holding a thousand tokens and a million: what the
/// scale benchmark compares end to end, without the server around it.
fn cache_size(c: &mut Criterion) {
    let key = TokenKey::from_encoded(KEY).unwrap();
    for count in [1_000u64, 1_000_000] {
        let cache: VerifyCache<u64> = VerifyCache::new(CacheConfig {
            capacity: count + count / 100,
            ..cache_config()
        });
        for i in 0..count {
            let digest = key.digest(&format!("token {i}"));
            cache.complete_fill(
                cache.begin_fill(&digest),
                digest,
                Cached::Known(Arc::new(i)),
            );
        }
        let digest = key.digest("token 0");
        c.bench_function(&format!("cache: get (hit) among {count} tokens"), |b| {
            b.iter(|| cache.get(black_box(&digest)))
        });
    }
}

criterion_group!(benches, pieces, verify_hit, response_encoding, cache_size);
criterion_main!(benches);
