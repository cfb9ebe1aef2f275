//! The change log, read back: how a change committed through one replica
//! reaches every replica's cache.
//!
//! Every change that affects how a token verifies appends a [`Change`] to the
//! log in its own transaction. Each replica reads the log in order of its
//! numbers ([`Follower`]), woken at once by a notification on PostgreSQL and
//! at the latest every poll interval, and drops what its cache holds about
//! each change. The event log ([`crate::audit::EventEntry`]) is numbered
//! and followed the same way by watchers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Timestamp;
use crate::token::Digest;

/// What a committed change touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// One token: revoked, restored, updated, renewed or deleted.
    Token(Digest),
    /// Every token of an owner: disabled or enabled.
    Owner(String),
}

/// A row of a numbered log.
pub trait Numbered {
    fn seq(&self) -> i64;
}

impl Numbered for Logged {
    fn seq(&self) -> i64 {
        self.seq
    }
}

/// A change as the log numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub seq: i64,
    pub change: Change,
    /// When it was written (the writer's clock).
    pub time: Timestamp,
    /// Made by this process, which applied it to its cache as it made it.
    pub ours: bool,
}

/// How long a missing number is waited for: its transaction may still be
/// open (numbers are taken before commit, so they can become visible out of
/// order), or it may have rolled back, leaving the number unused for good.
/// A change whose transaction commits later than this after writing its log
/// row is seen only through the cache's TTL.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(60);

/// Most missing numbers tracked at once; past it the oldest are given up.
const MAX_GAPS: usize = 10_000;

/// Where a replica stands in the log: every number up to `seen` has been read
/// except the `gaps`, which are asked for again on each read until they turn
/// up or [`GAP_TIMEOUT`] passes.
#[derive(Clone, Debug)]
pub struct Follower {
    seen: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl Follower {
    /// Starts after `seen`: what came before is taken as applied.
    pub fn new(seen: i64) -> Self {
        Follower {
            seen,
            gaps: BTreeMap::new(),
        }
    }

    /// Resumes after `seen` with numbers still missing below it, each with
    /// when it was first found missing (the most [`MAX_GAPS`] kept, the
    /// newest).
    pub fn resume(seen: i64, gaps: impl IntoIterator<Item = (i64, Instant)>) -> Self {
        let mut gaps: BTreeMap<i64, Instant> =
            gaps.into_iter().filter(|(g, _)| *g < seen).collect();
        while gaps.len() > MAX_GAPS {
            gaps.pop_first();
        }
        Follower { seen, gaps }
    }

    /// The highest number read.
    pub fn seen(&self) -> i64 {
        self.seen
    }

    /// The numbers to ask for again, besides those above [`Follower::seen`].
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// The missing numbers with when each was first found missing.
    pub fn gaps_since(&self) -> impl Iterator<Item = (i64, Instant)> + '_ {
        self.gaps.iter().map(|(g, at)| (*g, *at))
    }

    /// Takes what a read returned (rows above `seen`, and any of the gaps),
    /// and returns the rows not taken before, in log order.
    pub fn accept<R: Numbered>(&mut self, rows: Vec<R>, now: Instant) -> Vec<R> {
        let mut fresh = Vec::with_capacity(rows.len());
        let mut rows = rows;
        rows.sort_by_key(Numbered::seq);
        for row in rows {
            let seq = row.seq();
            if seq > self.seen {
                for missing in self.seen + 1..seq {
                    self.gaps.insert(missing, now);
                }
                self.seen = seq;
            } else if self.gaps.remove(&seq).is_none() {
                // Read before (a page boundary, or a duplicate): taken.
                continue;
            }
            fresh.push(row);
        }
        self.gaps
            .retain(|_, since| now.saturating_duration_since(*since) < GAP_TIMEOUT);
        while self.gaps.len() > MAX_GAPS {
            self.gaps.pop_first();
        }
        fresh
    }
}

/// When this replica last read the change log to the end: cached answers
/// are trusted only while that is recent, since a change made elsewhere
/// reaches the cache only through the log. Past the bound, Verify asks the
/// database (and, if it cannot be reached, answers UNAVAILABLE).
#[derive(Debug)]
pub struct Freshness {
    base: Instant,
    /// Milliseconds from `base` to the last complete read.
    synced_ms: AtomicU64,
    max_staleness_ms: u64,
}

impl Freshness {
    /// Fresh as of now (nothing is cached yet).
    pub fn new(max_staleness: Duration) -> Self {
        Freshness {
            base: Instant::now(),
            synced_ms: AtomicU64::new(0),
            max_staleness_ms: u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The log was read to the end at `at`.
    pub fn synced(&self, at: Instant) {
        self.synced_ms.fetch_max(self.ms(at), Ordering::Release);
    }

    /// When cached answers stop being trusted, unless the log is read
    /// again before.
    pub fn stale_at(&self) -> Instant {
        self.base
            + Duration::from_millis(
                self.synced_ms
                    .load(Ordering::Acquire)
                    .saturating_add(self.max_staleness_ms)
                    .saturating_add(1),
            )
    }

    /// Whether cached answers may still be served at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.ms(now)
            .saturating_sub(self.synced_ms.load(Ordering::Acquire))
            <= self.max_staleness_ms
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(seq: i64) -> Logged {
        Logged {
            seq,
            change: Change::Owner(format!("o{seq}")),
            time: Timestamp::EPOCH,
            ours: false,
        }
    }

    fn owners(changes: &[Logged]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match &c.change {
                Change::Owner(o) => o.clone(),
                Change::Token(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_number_that_turns_up_late_is_applied_once() {
        let start = Instant::now();
        let mut f = Follower::new(10);
        // 12 committed before 11.
        assert_eq!(owners(&f.accept(vec![owner(12)], start)), ["o12"]);
        assert_eq!((f.seen(), f.gaps()), (12, vec![11]));
        assert_eq!(
            owners(&f.accept(vec![owner(11), owner(13)], start)),
            ["o11", "o13"]
        );
        assert!(f.gaps().is_empty());
        // Read again (a duplicate): nothing new.
        assert!(f.accept(vec![owner(11), owner(12)], start).is_empty());
    }

    #[test]
    fn a_number_never_committed_is_given_up_after_the_timeout() {
        let start = Instant::now();
        let mut f = Follower::new(0);
        f.accept(vec![owner(3)], start);
        assert_eq!(f.gaps(), vec![1, 2]);
        f.accept(Vec::<Logged>::new(), start + GAP_TIMEOUT / 2);
        assert_eq!(f.gaps(), vec![1, 2]);
        f.accept(Vec::<Logged>::new(), start + GAP_TIMEOUT);
        assert!(f.gaps().is_empty());
        assert_eq!(f.seen(), 3);
    }

    #[test]
    fn a_resumed_follower_still_asks_for_its_gaps_until_they_time_out() {
        let start = Instant::now();
        let mut f = Follower::new(0);
        f.accept(vec![owner(3)], start);
        let resumed_gaps: Vec<_> = f.gaps_since().collect();
        let mut r = Follower::resume(f.seen(), resumed_gaps);
        assert_eq!((r.seen(), r.gaps()), (3, vec![1, 2]));
        assert_eq!(owners(&r.accept(vec![owner(2)], start)), ["o2"]);
        r.accept(Vec::<Logged>::new(), start + GAP_TIMEOUT);
        assert!(r.gaps().is_empty());
        // Gaps at or above the position make no sense and are dropped.
        assert!(
            Follower::resume(3, [(3, start), (7, start)])
                .gaps()
                .is_empty()
        );
    }

    #[test]
    fn cached_answers_are_trusted_only_while_the_last_read_is_recent() {
        let f = Freshness::new(Duration::from_secs(60));
        let start = Instant::now();
        assert!(f.is_fresh(start + Duration::from_secs(59)));
        assert!(!f.is_fresh(start + Duration::from_secs(61)));
        assert!(!f.is_fresh(f.stale_at()));
        assert!(f.is_fresh(f.stale_at() - Duration::from_millis(2)));
        f.synced(start + Duration::from_secs(61));
        assert!(f.is_fresh(start + Duration::from_secs(100)));
        // An older read does not move it back.
        f.synced(start);
        assert!(f.is_fresh(start + Duration::from_secs(100)));
    }

    #[test]
    fn rows_from_before_the_start_are_not_applied() {
        let mut f = Follower::new(5);
        assert!(
            f.accept(vec![owner(4), owner(5)], Instant::now())
                .is_empty()
        );
        assert!(f.gaps().is_empty());
    }
}
