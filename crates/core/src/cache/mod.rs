//! The verification cache: what Verify answers from memory.
//!
//! Keyed by token digest, it holds an immutable snapshot per known token and a
//! short-lived marker for digests the database does not know, so a stream of
//! unknown tokens costs one lookup each per `negative_ttl`, not one per request.
//! A known token's answer asks to be read again in the last fifth of its life
//! ([`Lookup::Live`]'s `refresh`), and once lapsed is still recognised
//! ([`Lookup::Lapsed`]) until its bucket is next written or expires, so that
//! Verify reads tokens in use ahead of unknown digests.
//!
//! # Buckets
//!
//! moka keeps some 300 bytes of bookkeeping per entry (key, entry record,
//! queue nodes), more than a cached token itself. So moka holds *buckets*:
//! each digest belongs to one of `capacity / 8` buckets, and a bucket is a
//! small array of slots (digest, expiry, snapshot) behind its own mutex.
//! moka's size bound counts slots, its eviction drops whole buckets (their
//! tokens are read again on their next use), and its bookkeeping is shared by
//! the tokens of a bucket. Every change to a bucket runs inside moka's per-key
//! `and_compute_with` and puts the bucket back, so changes to one bucket are
//! serialized and moka re-weighs it. A bucket is changed in place, not copied:
//! copies freed by the million leave the heap fragmented, and every later
//! allocation (each request's included) pays for it in cache misses. Each
//! slot carries its own expiry, checked on every read.
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
//! [`VerifyCache::invalidate_all`] moves a generation instead: slots (and
//! fills) from an older generation are never answered from.
//!
//! A starting replica warms the cache in bulk ([`warm`]) by the same rule:
//! every epoch is noted before the read, and an answer whose stripe moved
//! meanwhile is not kept.

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

use crate::token::Digest;
use crate::token::digest::DigestHasher;

/// Number of epoch counters. More stripes means fewer fills abandoned because
/// an unrelated token in the same stripe changed.
pub const STRIPES: usize = 4096;

/// Slots a bucket holds on average when the cache is full.
pub const SLOTS_PER_BUCKET: u64 = 8;

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

/// What the cache has for a digest, as of a given time.
#[derive(Debug)]
pub enum Lookup<V> {
    /// A live answer; for a known token, `refresh` says it is in the last
    /// fifth of its lifetime, time to read it again before it lapses.
    Live { value: Cached<V>, refresh: bool },
    /// A known token whose answer has lapsed (kept a while longer, so that
    /// reading it again can go ahead of lookups of digests never seen).
    Lapsed(Arc<V>),
    /// Nothing, or an answer from before [`VerifyCache::invalidate_all`].
    Absent,
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
    generation: u32,
}

/// One cached answer inside a bucket.
struct Slot<V> {
    digest: Digest,
    /// Milliseconds after the cache's start at which the answer lapses.
    expires: u64,
    generation: u32,
    /// `None`: unknown to the database.
    known: Option<Arc<V>>,
}

/// Whether a new answer replaces a live one for the same digest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Always,
    /// Warming: what a lookup cached meanwhile is at least as recent.
    UnlessLive,
}

type Bucket<V> = Arc<Mutex<Vec<Slot<V>>>>;
/// Keyed by [`VerifyCache::bucket_of`], whose keys are spread already.
type Buckets<V> = moka::sync::Cache<u64, Bucket<V>, BuildHasherDefault<DigestHasher>>;

/// The moka-backed cache, with race-safe fills.
pub struct VerifyCache<V> {
    /// `None` when configured with capacity 0: nothing is cached.
    buckets: Option<Buckets<V>>,
    capacity: u64,
    bucket_count: u64,
    epochs: Box<[AtomicU64]>,
    generation: AtomicU32,
    started: Instant,
    ttl_ms: u64,
    negative_ttl_ms: u64,
}

impl<V: Send + Sync + 'static> VerifyCache<V> {
    pub fn new(config: CacheConfig) -> Self {
        let buckets = (config.capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.capacity)
                .weigher(|_, bucket: &Bucket<V>| {
                    u32::try_from(lock(bucket).len()).unwrap_or(u32::MAX).max(1)
                })
                // A bucket outlives each of its slots by up to one more
                // lifetime (each was written no later than the bucket, with at
                // most the longer lifetime), so that a lapsed known token is
                // still recognised.
                .time_to_live(2 * config.ttl.max(config.negative_ttl))
                .build_with_hasher(BuildHasherDefault::default())
        });
        VerifyCache {
            buckets,
            capacity: config.capacity,
            bucket_count: config.capacity.div_ceil(SLOTS_PER_BUCKET).max(1),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            generation: AtomicU32::new(0),
            started: Instant::now(),
            ttl_ms: millis(config.ttl),
            negative_ttl_ms: millis(config.negative_ttl),
        }
    }

    /// The most entries held, as configured (0: the cache is off).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn get(&self, digest: &Digest) -> Option<Cached<V>> {
        self.get_at(digest, self.now_ms())
    }

    /// [`VerifyCache::get`] as of `now`, for a caller that read the time
    /// already.
    pub fn get_as_of(&self, digest: &Digest, now: Instant) -> Option<Cached<V>> {
        self.get_at(digest, millis(now.saturating_duration_since(self.started)))
    }

    fn get_at(&self, digest: &Digest, now_ms: u64) -> Option<Cached<V>> {
        match self.lookup_at(digest, now_ms) {
            Lookup::Live { value, .. } => Some(value),
            Lookup::Lapsed(_) | Lookup::Absent => None,
        }
    }

    /// What the cache has for `digest` as of `now`.
    pub fn lookup_as_of(&self, digest: &Digest, now: Instant) -> Lookup<V> {
        self.lookup_at(digest, millis(now.saturating_duration_since(self.started)))
    }

    fn lookup_at(&self, digest: &Digest, now_ms: u64) -> Lookup<V> {
        let Some(bucket) = self
            .buckets
            .as_ref()
            .and_then(|b| b.get(&self.bucket_of(digest)))
        else {
            return Lookup::Absent;
        };
        let slots = lock(&bucket);
        let Some(slot) = slots.iter().find(|slot| slot.digest == *digest) else {
            return Lookup::Absent;
        };
        if slot.generation != self.generation.load(Ordering::Acquire) {
            return Lookup::Absent;
        }
        match &slot.known {
            Some(v) if now_ms >= slot.expires => Lookup::Lapsed(Arc::clone(v)),
            Some(v) => Lookup::Live {
                value: Cached::Known(Arc::clone(v)),
                refresh: slot.expires - now_ms <= self.ttl_ms / 5,
            },
            None if now_ms >= slot.expires => Lookup::Absent,
            None => Lookup::Live {
                value: Cached::Unknown,
                refresh: false,
            },
        }
    }

    /// Call before reading the database for `digest`.
    pub fn begin_fill(&self, digest: &Digest) -> FillTicket {
        let stripe = stripe_of(digest);
        FillTicket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::SeqCst),
            generation: self.generation.load(Ordering::SeqCst),
        }
    }

    /// Caches what the database said, unless `digest` was invalidated since
    /// [`Self::begin_fill`]. Returns whether the answer stayed cached.
    pub fn complete_fill(&self, ticket: FillTicket, digest: Digest, value: Cached<V>) -> bool {
        let Some(buckets) = &self.buckets else {
            return false;
        };
        let now = self.now_ms();
        let (known, lifetime) = match value {
            Cached::Known(v) => (Some(v), self.ttl_ms),
            Cached::Unknown => (None, self.negative_ttl_ms),
        };
        let slot = Slot {
            digest,
            expires: now.saturating_add(lifetime),
            generation: ticket.generation,
            known,
        };
        self.put(buckets, slot, now, Replace::Always);
        self.kept(
            buckets,
            &digest,
            ticket.stripe,
            ticket.epoch,
            ticket.generation,
        )
    }

    /// After putting an answer read when `digest`'s stripe was at `epoch`
    /// and the cache at `generation`: whether it stands. If the stripe
    /// moved since, it is removed again; if the generation moved, its slot
    /// (of the old generation) is never answered from.
    fn kept(
        &self,
        buckets: &Buckets<V>,
        digest: &Digest,
        stripe: usize,
        epoch: u64,
        generation: u32,
    ) -> bool {
        if self.epochs[stripe].load(Ordering::SeqCst) == epoch {
            generation == self.generation.load(Ordering::SeqCst)
        } else {
            self.remove(buckets, digest);
            false
        }
    }

    /// Puts `slot` into its bucket, dropping the bucket's lapsed slots and
    /// (unless `replace` says to keep a live one) the digest's old one.
    /// Returns whether it was put.
    fn put(&self, buckets: &Buckets<V>, slot: Slot<V>, now: u64, replace: Replace) -> bool {
        let digest = slot.digest;
        let mut put = false;
        buckets
            .entry(self.bucket_of(&digest))
            .and_compute_with(|old| {
                let bucket = old.map_or_else(
                    || Arc::new(Mutex::new(Vec::with_capacity(SLOTS_PER_BUCKET as usize))),
                    moka::Entry::into_value,
                );
                {
                    let mut slots = lock(&bucket);
                    if replace == Replace::UnlessLive
                        && slots
                            .iter()
                            .any(|s| s.digest == digest && self.is_live(s, now))
                    {
                        return Op::Nop;
                    }
                    slots.retain(|s| s.digest != digest && self.is_live(s, now));
                    slots.push(slot);
                    put = true;
                }
                Op::Put(bucket)
            });
        put
    }

    /// Forgets `digest`, and makes every fill of it already under way drop its
    /// answer. Call after the change is committed.
    pub fn invalidate(&self, digest: &Digest) {
        self.epochs[stripe_of(digest)].fetch_add(1, Ordering::SeqCst);
        if let Some(buckets) = &self.buckets {
            self.remove(buckets, digest);
        }
    }

    /// Forgets everything, and makes every fill under way drop its answer.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(buckets) = &self.buckets {
            buckets.invalidate_all();
        }
    }

    /// Slots held (an emptied bucket counts as one), after pending
    /// maintenance; lapsed slots count until their bucket is next written or
    /// dropped.
    pub fn entry_count(&self) -> u64 {
        self.buckets.as_ref().map_or(0, |buckets| {
            buckets.run_pending_tasks();
            buckets.weighted_size()
        })
    }

    fn remove(&self, buckets: &Buckets<V>, digest: &Digest) {
        buckets
            .entry(self.bucket_of(digest))
            .and_compute_with(|old| {
                let Some(bucket) = old.map(moka::Entry::into_value) else {
                    return Op::Nop;
                };
                let removed = {
                    let mut slots = lock(&bucket);
                    let before = slots.len();
                    slots.retain(|s| s.digest != *digest);
                    slots.len() != before
                };
                // Put back, even empty, so that moka re-weighs it: moka 0.12
                // miscounts the weight of an entry removed while its previous
                // update awaits maintenance.
                if removed { Op::Put(bucket) } else { Op::Nop }
            });
    }

    fn is_live(&self, slot: &Slot<V>, now_ms: u64) -> bool {
        now_ms < slot.expires && slot.generation == self.generation.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    /// The key of `digest`'s bucket: bytes 8..16 (stripes use 0..2) scaled
    /// onto 0..bucket_count, then multiplied by an odd constant, which keeps
    /// buckets apart and spreads their keys' bits for moka's hash table.
    fn bucket_of(&self, digest: &Digest) -> u64 {
        let bits = u64::from_le_bytes(digest.0[8..16].try_into().expect("8 bytes"));
        let index = ((u128::from(bits) * u128::from(self.bucket_count)) >> 64) as u64;
        index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Buckets change only by `retain` and `push`, which leave whole slots
    // even if a panic interrupts them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn stripe_of(digest: &Digest) -> usize {
    // Digests are uniformly distributed, so two bytes pick a stripe fairly.
    usize::from(u16::from_le_bytes([digest.0[0], digest.0[1]])) % STRIPES
}

#[cfg(test)]
mod tests;
pub mod warm;
