use super::*;

impl CacheConfig {
    fn default_for_tests() -> Self {
        CacheConfig {
            capacity: 1_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

fn cache() -> VerifyCache<&'static str> {
    VerifyCache::new(CacheConfig::default_for_tests())
}

fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

fn known(v: &'static str) -> Cached<&'static str> {
    Cached::Known(Arc::new(v))
}

fn is_known_as(c: Option<Cached<&'static str>>, v: &str) -> bool {
    matches!(c, Some(Cached::Known(x)) if *x == v)
}

#[test]
fn a_fill_with_no_change_in_between_is_cached() {
    let c = cache();
    let t = c.begin_fill(&digest(1));
    assert!(c.complete_fill(t, digest(1), known("active")));
    assert!(is_known_as(c.get(&digest(1)), "active"));
}

#[test]
fn a_known_answer_asks_for_a_refresh_in_its_last_fifth_and_is_recognised_once_lapsed() {
    let c = cache();
    let t = c.begin_fill(&digest(1));
    c.complete_fill(t, digest(1), known("active"));
    let t = c.begin_fill(&digest(2));
    c.complete_fill(t, digest(2), Cached::Unknown);
    let start = c.now_ms();
    let at = |secs: u64| start + secs * 1_000;
    let live = |l: Lookup<&str>| match l {
        Lookup::Live { refresh, .. } => Some(refresh),
        _ => None,
    };
    // ttl 60 s: the last fifth starts at 48 s.
    assert_eq!(live(c.lookup_at(&digest(1), at(47))), Some(false));
    assert_eq!(live(c.lookup_at(&digest(1), at(49))), Some(true));
    assert!(matches!(c.lookup_at(&digest(1), at(61)), Lookup::Lapsed(v) if *v == "active"));
    // "Unknown" is never refreshed, and is simply gone once lapsed.
    assert_eq!(live(c.lookup_at(&digest(2), at(4))), Some(false));
    assert!(matches!(c.lookup_at(&digest(2), at(6)), Lookup::Absent));
    // Nothing from before a full invalidation counts.
    c.invalidate_all();
    assert!(matches!(c.lookup_at(&digest(1), at(61)), Lookup::Absent));
}

#[test]
fn a_fill_that_read_before_a_revoke_does_not_cache_its_stale_answer() {
    let c = cache();
    // Verify misses and reads the database: the token is active.
    let ticket = c.begin_fill(&digest(1));
    let stale = known("active");
    // Meanwhile RevokeToken commits and invalidates.
    c.invalidate(&digest(1));
    // The lookup now tries to cache what it read.
    assert!(!c.complete_fill(ticket, digest(1), stale));
    assert!(
        c.get(&digest(1)).is_none(),
        "a revoked token was cached as active"
    );
}

#[test]
fn an_invalidation_racing_the_insert_itself_still_wins() {
    // The filler's epoch check can pass just before the invalidation bumps
    // the epoch; the invalidation's removal then comes after the insert.
    let c = cache();
    let ticket = c.begin_fill(&digest(1));
    let epoch = ticket.epoch;
    let stripe = ticket.stripe;
    assert!(c.complete_fill(ticket, digest(1), known("active")));
    assert_eq!(c.epochs[stripe].load(Ordering::SeqCst), epoch);
    c.invalidate(&digest(1));
    assert!(c.get(&digest(1)).is_none());
}

#[test]
fn a_fill_that_began_after_the_invalidation_is_cached() {
    let c = cache();
    c.invalidate(&digest(1));
    let t = c.begin_fill(&digest(1));
    assert!(c.complete_fill(t, digest(1), known("revoked")));
    assert!(is_known_as(c.get(&digest(1)), "revoked"));
}

#[test]
fn concurrent_fills_that_read_before_an_invalidation_are_all_refused() {
    // A writer publishes versions 1..=3, invalidating after each. Fillers
    // read the current version, then wait until a newer version has been
    // invalidated, so what they hold is stale by construction: every such
    // fill must be refused, and the cache never ends up holding one.
    use std::sync::atomic::AtomicUsize;
    static VERSIONS: [&str; 4] = ["v0", "v1", "v2", "v3"];
    const LAST: usize = VERSIONS.len() - 1;
    for _ in 0..100 {
        let c = Arc::new(cache());
        let db = Arc::new(AtomicUsize::new(0));
        let invalidated = Arc::new(AtomicUsize::new(0));
        let fillers: Vec<_> = (0..4)
            .map(|_| {
                let (c, db, invalidated) =
                    (Arc::clone(&c), Arc::clone(&db), Arc::clone(&invalidated));
                std::thread::spawn(move || {
                    let ticket = c.begin_fill(&digest(7));
                    let read = db.load(Ordering::SeqCst);
                    if read == LAST {
                        c.complete_fill(ticket, digest(7), known(VERSIONS[read]));
                        return true;
                    }
                    while invalidated.load(Ordering::SeqCst) <= read {
                        std::thread::yield_now();
                    }
                    !c.complete_fill(ticket, digest(7), known(VERSIONS[read]))
                })
            })
            .collect();
        for n in 1..=LAST {
            db.store(n, Ordering::SeqCst);
            c.invalidate(&digest(7));
            invalidated.store(n, Ordering::SeqCst);
        }
        for f in fillers {
            assert!(f.join().unwrap(), "a stale fill was kept");
        }
        match c.get(&digest(7)) {
            None => {}
            Some(Cached::Known(v)) => assert_eq!(*v, "v3"),
            Some(Cached::Unknown) => unreachable!(),
        }
    }
}

#[test]
fn invalidating_everything_also_refuses_fills_under_way() {
    let c = cache();
    let t = c.begin_fill(&digest(3));
    c.complete_fill(c.begin_fill(&digest(4)), digest(4), known("a"));
    c.invalidate_all();
    assert!(c.get(&digest(4)).is_none());
    assert!(!c.complete_fill(t, digest(3), known("stale")));
}

#[test]
fn with_capacity_zero_nothing_is_cached() {
    let c: VerifyCache<&'static str> = VerifyCache::new(CacheConfig {
        capacity: 0,
        ..CacheConfig::default_for_tests()
    });
    let t = c.begin_fill(&digest(1));
    assert!(!c.complete_fill(t, digest(1), known("active")));
    assert!(c.get(&digest(1)).is_none());
}

#[test]
fn unknown_digests_are_cached_too() {
    let c = cache();
    let t = c.begin_fill(&digest(2));
    c.complete_fill(t, digest(2), Cached::Unknown);
    assert!(matches!(c.get(&digest(2)), Some(Cached::Unknown)));
}

#[test]
fn tokens_sharing_a_bucket_are_invalidated_one_by_one() {
    let c = cache();
    // Digests alike in their bucket bytes share a bucket.
    assert_eq!(c.bucket_of(&digest(1)), c.bucket_of(&digest(2)));
    c.complete_fill(c.begin_fill(&digest(1)), digest(1), known("one"));
    c.complete_fill(c.begin_fill(&digest(2)), digest(2), Cached::Unknown);
    c.complete_fill(c.begin_fill(&digest(1)), digest(1), known("one again"));
    assert!(is_known_as(c.get(&digest(1)), "one again"));
    assert_eq!(c.entry_count(), 2, "a refill replaces its slot");
    c.invalidate(&digest(2));
    assert!(c.get(&digest(2)).is_none());
    assert!(is_known_as(c.get(&digest(1)), "one again"));
    c.invalidate(&digest(1));
    assert!(c.get(&digest(1)).is_none());
    assert!(c.get(&digest(2)).is_none());
    assert_eq!(c.entry_count(), 1, "the emptied bucket");
}

#[test]
fn answers_lapse_after_their_own_lifetime() {
    let c = cache();
    c.complete_fill(c.begin_fill(&digest(1)), digest(1), known("active"));
    c.complete_fill(c.begin_fill(&digest(2)), digest(2), Cached::Unknown);
    let now = c.now_ms();
    // "unknown" is trusted for 5 s, a token for 60 s.
    assert!(c.get_at(&digest(2), now + 4_000).is_some());
    assert!(c.get_at(&digest(2), now + 5_001).is_none());
    assert!(is_known_as(c.get_at(&digest(1), now + 59_000), "active"));
    assert!(c.get_at(&digest(1), now + 60_001).is_none());
}

#[test]
fn the_capacity_bounds_the_tokens_held() {
    let c = cache();
    for i in 0..10_000u32 {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_le_bytes());
        d[8..16].copy_from_slice(
            &u64::from(i)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .to_le_bytes(),
        );
        let d = Digest(d);
        c.complete_fill(c.begin_fill(&d), d, known("x"));
    }
    let held = c.entry_count();
    assert!(held <= 1_000, "{held} held over a capacity of 1000");
    assert!(held > 0);
}
