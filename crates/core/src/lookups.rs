//! Bounds on Verify's cache misses.
//!
//! Every miss asks the database, and a stream of well-formed random tokens is
//! nothing but misses: unbounded, it would take the database, and the CPU its
//! lookups cost here, from everyone else. Two bounds hold. In no one-second
//! window do more than `max_per_second` lookups start (a token bucket that
//! lends a hundredth of a second's worth and refills so that the loan and
//! the refill together stay within the bound): a miss past the rate waits
//! its turn, parked, costing nothing. And
//! at most `max_pending` misses are in progress at once, waiting or looking
//! up: one more is refused at once, without a lookup, and its caller told to
//! retry (`UNAVAILABLE`). So no miss waits longer than about
//! `max_pending / max_per_second`, and a flood, however many calls it keeps
//! in flight, gets lookups at the bounded rate and refusals for the rest
//! only past `max_pending`. Hits are not counted: tokens in the cache keep
//! verifying through a flood. Nor are lookups of tokens the cache knows: the
//! one call that reads a token in use again in the last fifth of its cached
//! answer's life, or just after it lapsed, goes ahead of both bounds (there
//! is at most one such lookup per cached token at a time, and a flood of
//! random tokens has none), so a known token is never refused for a flood.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// `lookups.max_pending` misses were already in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

pub struct LookupLimit {
    max_pending: usize,
    pending: AtomicUsize,
    bucket: Option<Mutex<Bucket>>,
}

impl std::fmt::Debug for LookupLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupLimit")
            .field("max_pending", &self.max_pending)
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A miss admitted: it counts as in progress until dropped.
#[must_use]
pub struct Admitted<'a>(&'a LookupLimit);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LookupLimit {
    /// At most `max_pending` misses in progress and `max_per_second` lookups
    /// started per second (0: no rate bound).
    pub fn new(max_pending: usize, max_per_second: u32) -> Self {
        LookupLimit {
            max_pending,
            pending: AtomicUsize::new(0),
            bucket: (max_per_second > 0).then(|| Mutex::new(Bucket::full(max_per_second))),
        }
    }

    /// No bound at all.
    pub fn unbounded() -> Self {
        LookupLimit::new(usize::MAX, 0)
    }

    /// Admits one miss once its turn under the rate has come, or refuses it
    /// at once when `max_pending` misses are in progress.
    ///
    /// # Errors
    /// [`Refused`]; nothing is taken then.
    pub async fn admit(&self) -> Result<Admitted<'_>, Refused> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self);
        if before >= self.max_pending {
            return Err(Refused);
        }
        let wait = self.bucket.as_ref().map_or(Duration::ZERO, |bucket| {
            bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .reserve(Instant::now())
        });
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(admitted)
    }

    /// Misses in progress now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// A token bucket for at most `max` a second in any one-second window: it
/// holds up to `capacity` (a hundredth of `max`, at least one) and refills
/// at `max - (capacity - 1)` a second. A full bucket's first token is the
/// one the refill earned just before, so a one-second window sees at most
/// `capacity - 1` lent and `max - (capacity - 1)` refilled. A reservation
/// past the tokens left takes one ahead (the count goes below zero) and is
/// told how long to wait for it; `max_pending` bounds how far ahead.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(max: u32) -> Self {
        let capacity = (max / 100).max(1);
        Bucket {
            rate: f64::from(max - (capacity - 1)),
            capacity: f64::from(capacity),
            tokens: f64::from(capacity),
            at: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait until it is due.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn misses_past_max_pending_are_refused_until_one_ends() {
        let limit = LookupLimit::new(2, 0);
        let first = limit.admit().await.unwrap();
        let _second = limit.admit().await.unwrap();
        assert_eq!(limit.admit().await.err(), Some(Refused));
        assert_eq!(limit.pending(), 2, "a refusal takes no place");
        drop(first);
        assert!(limit.admit().await.is_ok());
    }

    /// Starts under constant demand from `bucket`, as instants: each
    /// reservation made as soon as the one before it was due.
    fn starts(bucket: &mut Bucket, from: Instant, count: usize) -> Vec<Instant> {
        let mut at = from;
        (0..count)
            .map(|_| {
                at += bucket.reserve(at);
                at
            })
            .collect()
    }

    #[test]
    fn the_bucket_lends_a_hundredth_of_a_second_and_then_spaces_lookups() {
        let start = Instant::now();
        let mut bucket = Bucket::full(1000);
        bucket.at = start;
        let waits: Vec<_> = (0..12).map(|_| bucket.reserve(start)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero), "{waits:?}");
        let micros = |d: &Duration| d.as_micros();
        // Refilled at 991 a second: a token every 1.009 ms.
        assert_eq!(
            waits[10..].iter().map(micros).collect::<Vec<_>>(),
            [1009, 2018]
        );
        // A long pause refills it only to its capacity.
        let later = start + Duration::from_secs(60);
        let waits: Vec<_> = (0..11).map(|_| bucket.reserve(later)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero));
        assert_eq!(micros(&waits[10]), 1009);
    }

    #[test]
    fn no_one_second_window_sees_more_than_the_bound() {
        for max in [1, 7, 10, 99, 100, 250, 1000] {
            let start = Instant::now();
            let mut bucket = Bucket::full(max);
            bucket.at = start;
            // A burst at once, a pause long enough to refill, then another.
            let mut at = starts(&mut bucket, start, 3 * max as usize);
            let resumed = *at.last().unwrap() + Duration::from_secs(5);
            at.extend(starts(&mut bucket, resumed, 3 * max as usize));
            for (i, first) in at.iter().enumerate() {
                let within = at[i..]
                    .iter()
                    .take_while(|t| t.duration_since(*first) < Duration::from_secs(1))
                    .count();
                assert!(within <= max as usize, "{max}/s: {within} in one second");
            }
            // And the bound is what it sustains, give or take the loan.
            let span = at[3 * max as usize - 1].duration_since(at[0]).as_secs_f64();
            let sustained = (3 * max - 1) as f64 / span;
            assert!(
                sustained > 0.98 * f64::from(max),
                "{max}/s: sustained {sustained:.1}/s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_past_the_rate_waits_its_turn_holding_its_place() {
        let limit = LookupLimit::new(10, 1);
        let _first = limit.admit().await.unwrap();
        let started = Instant::now();
        let _second = limit.admit().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(limit.pending(), 2);
    }
}
