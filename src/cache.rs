//! The verification cache: what Verify answers from memory.
//!
//! Keyed by token digest, it holds an immutable snapshot per known token and a
//! short-lived marker for digests the database does not know, so a stream of
//! unknown tokens costs one lookup each per `negative_ttl`, not one per request.
//!
//! # Filling without resurrecting revoked tokens
//!
//! A lookup that read the database *before* a revoke committed must not put
//! its stale answer into the cache *after* the revoke invalidated the entry:
//! the revoked token would then verify as valid until the entry expired. Every
//! digest maps to one of [`STRIPES`] epoch counters. [`VerifyCache::invalidate`]
//! bumps the epoch, then removes the entry. A fill notes the epoch before it
//! reads the database ([`VerifyCache::begin_fill`]), inserts, then reads the
//! epoch again and removes its own insert if the epoch moved
//! ([`VerifyCache::complete_fill`]). Whatever the interleaving, either the
//! filler sees the bump, or the bump (and the removal after it) came after the
//! insert; and a database read that began after the bump sees the change.
//!
//! Imports neither tonic nor sea_orm; it knows nothing about tokens but their
//! digest.

use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::token::Digest;
use crate::token::digest::DigestHasher;

type Entries<V> = moka::sync::Cache<Digest, Cached<V>, BuildHasherDefault<DigestHasher>>;

/// Number of epoch counters. More stripes means fewer fills abandoned because
/// an unrelated token in the same stripe changed.
pub const STRIPES: usize = 4096;

/// A cached answer.
#[derive(Debug)]
pub enum Cached<V> {
    /// The database has this token; here is what Verify needs.
    Known(Arc<V>),
    /// The database had no token with this digest when last asked.
    Unknown,
}

impl<V> Clone for Cached<V> {
    fn clone(&self) -> Self {
        match self {
            Cached::Known(v) => Cached::Known(Arc::clone(v)),
            Cached::Unknown => Cached::Unknown,
        }
    }
}

/// Sizes and lifetimes of cache entries.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Most entries held; the least useful are evicted past it. 0 turns the
    /// cache off: every Verify reads the database (to measure that path).
    pub capacity: u64,
    /// How long a known token's snapshot is trusted. Changes made through this
    /// process invalidate at once; this bounds how long a change made through
    /// another replica can go unseen here.
    pub ttl: Duration,
    /// How long "unknown" is remembered.
    pub negative_ttl: Duration,
}

/// Proof that a fill began at a given epoch; see the module docs.
#[derive(Debug)]
#[must_use = "a fill ticket does nothing unless completed"]
pub struct FillTicket {
    stripe: usize,
    epoch: u64,
}

/// The moka-backed cache, with race-safe fills.
pub struct VerifyCache<V> {
    /// `None` when configured with capacity 0: nothing is cached.
    entries: Option<Entries<V>>,
    epochs: Box<[AtomicU64]>,
}

impl<V: Send + Sync + 'static> VerifyCache<V> {
    pub fn new(config: CacheConfig) -> Self {
        let entries = (config.capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(EntryExpiry {
                    ttl: config.ttl,
                    negative_ttl: config.negative_ttl,
                })
                .build_with_hasher(BuildHasherDefault::default())
        });
        VerifyCache {
            entries,
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn get(&self, digest: &Digest) -> Option<Cached<V>> {
        self.entries.as_ref()?.get(digest)
    }

    /// Call before reading the database for `digest`.
    pub fn begin_fill(&self, digest: &Digest) -> FillTicket {
        let stripe = stripe_of(digest);
        FillTicket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::SeqCst),
        }
    }

    /// Caches what the database said, unless `digest` was invalidated since
    /// [`Self::begin_fill`]. Returns whether the answer stayed cached.
    pub fn complete_fill(&self, ticket: FillTicket, digest: Digest, value: Cached<V>) -> bool {
        let Some(entries) = &self.entries else {
            return false;
        };
        entries.insert(digest, value);
        if self.epochs[ticket.stripe].load(Ordering::SeqCst) == ticket.epoch {
            true
        } else {
            entries.invalidate(&digest);
            false
        }
    }

    /// Forgets `digest`, and makes every fill of it already under way drop its
    /// answer. Call after the change is committed.
    pub fn invalidate(&self, digest: &Digest) {
        self.epochs[stripe_of(digest)].fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.invalidate(digest);
        }
    }

    /// Forgets everything, and makes every fill under way drop its answer.
    pub fn invalidate_all(&self) {
        for epoch in &*self.epochs {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    /// Entries held, after pending maintenance.
    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.entry_count()
        })
    }
}

fn stripe_of(digest: &Digest) -> usize {
    // Digests are uniformly distributed, so two bytes pick a stripe fairly.
    usize::from(u16::from_le_bytes([digest.0[0], digest.0[1]])) % STRIPES
}

struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl EntryExpiry {
    fn lifetime<V>(&self, value: &Cached<V>) -> Duration {
        match value {
            Cached::Known(_) => self.ttl,
            Cached::Unknown => self.negative_ttl,
        }
    }
}

impl<V> Expiry<Digest, Cached<V>> for EntryExpiry {
    fn expire_after_create(&self, _: &Digest, value: &Cached<V>, _: Instant) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _: &Digest,
        value: &Cached<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}

#[cfg(test)]
mod tests {
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
        c.entries
            .as_ref()
            .unwrap()
            .insert(digest(1), known("active"));
        assert_eq!(c.epochs[ticket.stripe].load(Ordering::SeqCst), ticket.epoch);
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
}
