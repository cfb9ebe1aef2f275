//! Warming: answers read in bulk before a replica serves (the tokens used
//! recently), kept by the rule fills follow. The epochs are noted once,
//! before the read ([`VerifyCache::begin_warm`]); each answer is put, then
//! dropped again if its stripe's epoch (or the generation) moved since
//! ([`VerifyCache::warm`]), so a change committed while the read ran, and
//! invalidated here by the change log or by this replica itself, is never
//! answered from the stale copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Replace, Slot, VerifyCache, stripe_of};
use crate::token::Digest;

/// Every epoch and the generation, as they were before a bulk read.
#[must_use = "a warm ticket does nothing unless answers are warmed with it"]
pub struct WarmTicket {
    epochs: Box<[u64]>,
    generation: u32,
}

impl std::fmt::Debug for WarmTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmTicket")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<V: Send + Sync + 'static> VerifyCache<V> {
    /// Call before the bulk read whose answers [`VerifyCache::warm`] keeps.
    pub fn begin_warm(&self) -> WarmTicket {
        WarmTicket {
            epochs: self
                .epochs
                .iter()
                .map(|e| e.load(Ordering::SeqCst))
                .collect(),
            generation: self.generation.load(Ordering::SeqCst),
        }
    }

    /// Caches a known token read in bulk after `ticket` was taken, unless
    /// the cache holds a live answer for it already (a lookup made since is
    /// as recent) or it was invalidated since. The answer lives between half
    /// the TTL and the whole of it, spread by the digest, so that the tokens
    /// warmed together are not all read again together. Returns whether it
    /// stayed cached.
    pub fn warm(&self, ticket: &WarmTicket, digest: Digest, value: Arc<V>) -> bool {
        let Some(buckets) = &self.buckets else {
            return false;
        };
        let now = self.now_ms();
        let half = self.ttl_ms / 2;
        let spread = u64::from_le_bytes(digest.0[16..24].try_into().expect("8 bytes"));
        let slot = Slot {
            digest,
            expires: now
                .saturating_add(self.ttl_ms - half)
                .saturating_add(spread % (half + 1)),
            generation: ticket.generation,
            known: Some(value),
        };
        if !self.put(buckets, slot, now, Replace::UnlessLive) {
            return false;
        }
        let stripe = stripe_of(&digest);
        self.kept(
            buckets,
            &digest,
            stripe,
            ticket.epochs[stripe],
            ticket.generation,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::{CacheConfig, Cached};

    fn cache() -> VerifyCache<&'static str> {
        VerifyCache::new(CacheConfig {
            capacity: 1_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        })
    }

    fn digest(n: u8) -> Digest {
        let mut d = [n; 32];
        d[16..24].copy_from_slice(&u64::from(n).wrapping_mul(0x9E37_79B9).to_le_bytes());
        Digest(d)
    }

    fn known_as(c: &VerifyCache<&'static str>, d: u8) -> Option<&'static str> {
        match c.get(&digest(d)) {
            Some(Cached::Known(v)) => Some(*v),
            _ => None,
        }
    }

    #[test]
    fn answers_read_in_bulk_are_cached() {
        let c = cache();
        let ticket = c.begin_warm();
        for d in 1..=20 {
            assert!(c.warm(&ticket, digest(d), Arc::new("warm")));
        }
        assert!((1..=20).all(|d| known_as(&c, d) == Some("warm")));
    }

    #[test]
    fn a_token_invalidated_while_the_read_ran_is_not_kept() {
        let c = cache();
        let ticket = c.begin_warm();
        // The bulk read saw the token active; a revoke committed and
        // invalidated before the answer was put.
        c.invalidate(&digest(1));
        assert!(!c.warm(&ticket, digest(1), Arc::new("active")));
        assert_eq!(known_as(&c, 1), None);
        assert!(
            c.warm(&ticket, digest(2), Arc::new("active")),
            "another stripe"
        );
    }

    #[test]
    fn an_invalidation_after_the_put_still_removes_it() {
        let c = cache();
        let ticket = c.begin_warm();
        assert!(c.warm(&ticket, digest(1), Arc::new("active")));
        c.invalidate(&digest(1));
        assert_eq!(known_as(&c, 1), None);
    }

    #[test]
    fn invalidating_everything_while_the_read_ran_refuses_every_answer() {
        let c = cache();
        let ticket = c.begin_warm();
        c.invalidate_all();
        assert!(!c.warm(&ticket, digest(1), Arc::new("active")));
        assert_eq!(known_as(&c, 1), None);
    }

    #[test]
    fn a_live_answer_cached_meanwhile_is_kept() {
        let c = cache();
        let ticket = c.begin_warm();
        // Verify looked the token up after the bulk read began.
        assert!(c.complete_fill(
            c.begin_fill(&digest(1)),
            digest(1),
            Cached::Known(Arc::new("looked up"))
        ));
        assert!(!c.warm(&ticket, digest(1), Arc::new("read in bulk")));
        assert_eq!(known_as(&c, 1), Some("looked up"));
    }

    #[test]
    fn warmed_answers_lapse_between_half_the_ttl_and_all_of_it() {
        let c = cache();
        let ticket = c.begin_warm();
        let now = c.now_ms();
        let mut lapses = Vec::new();
        for d in 1..=100 {
            assert!(c.warm(&ticket, digest(d), Arc::new("warm")));
            let lapse = (0..=60)
                .map(|s| now + s * 1_000)
                .find(|&at| c.get_at(&digest(d), at).is_none())
                .expect("lapses within the TTL");
            assert!((30_000..=61_000).contains(&(lapse - now)), "{lapse}");
            lapses.push(lapse);
        }
        lapses.sort_unstable();
        lapses.dedup();
        assert!(lapses.len() > 10, "spread, not together: {lapses:?}");
    }
}
