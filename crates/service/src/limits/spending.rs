//! What a call spends: a token's limits, what spending found, and the
//! books one call keeps while it spends.

use std::sync::Arc;
use std::time::Duration;

use super::bucket::{Bucket, Source, Take};
use crate::clock::Timestamp;
use latchkey_core::limit::{Credits, RateLimit, Window};

/// The limits of one token, found when its answer is cached: the buckets
/// of its rate limits (its own, then its owner's) and of its credits.
#[derive(Debug)]
pub struct Limits {
    pub(super) rates: Vec<(Rate, Arc<Bucket>)>,
    pub(super) credits: Option<(Credits, Arc<Bucket>)>,
}

/// A rate limit as spending reads it.
#[derive(Debug)]
pub(super) struct Rate {
    /// Shared with every answer about it.
    pub(super) name: Arc<str>,
    pub(super) limit: RateLimit,
}

impl Rate {
    /// Where its bucket takes more for a call in `window`.
    pub(super) fn source(&self, window: Window) -> Source {
        Source::Rate {
            limit: self.limit.limit,
            window,
        }
    }
}

/// What spending found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    /// A rate limit's window is full: nothing was spent.
    RateLimited {
        retry_after: Duration,
    },
    /// The credits do not cover the cost: nothing was spent.
    UsageExceeded,
}

/// The state of the rate limit closest to its end after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateState {
    pub name: Arc<str>,
    pub limit: u64,
    pub window: Duration,
    /// Calls left in the window, as this replica knows.
    pub remaining: u64,
    /// Until the window ends, in whole seconds rounded up.
    pub reset: Duration,
}

/// What a call spent, or why it was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spending {
    pub outcome: Outcome,
    /// For a token with credits: about how many are left (the database's
    /// count at this replica's last take, plus what it holds).
    pub credits_remaining: Option<u64>,
    pub rate: Option<RateState>,
}

/// What one call has spent so far, and what its answer will say: kept
/// alike by [`Allowances::spend_held`] and [`Allowances::spend`].
pub(super) struct Tally<'a> {
    limits: &'a Limits,
    at: Timestamp,
    /// Which rate limits counted the call (at most 16: 8 of the token, 8
    /// of its owner).
    counted: u32,
    /// Of those, the one with the fewest calls left, and the one that
    /// refused the call: its calls left and its window.
    fewest: Option<(&'a Rate, u64, Window)>,
    refusing: Option<(&'a Rate, u64, Window)>,
    pub(super) outcome: Outcome,
    credits_remaining: Option<u64>,
}

impl<'a> Tally<'a> {
    pub(super) fn new(limits: &'a Limits, at: Timestamp) -> Self {
        Tally {
            limits,
            at,
            counted: 0,
            fewest: None,
            refusing: None,
            outcome: Outcome::Admitted,
            credits_remaining: None,
        }
    }

    /// Notes what rate limit `i` found; `false` once it refused the call.
    pub(super) fn rate(&mut self, i: usize, rate: &'a Rate, window: Window, take: Take) -> bool {
        match take {
            Take::Spent { remaining } => {
                self.counted |= 1 << i;
                if self.fewest.is_none_or(|(_, fewest, _)| remaining < fewest) {
                    self.fewest = Some((rate, remaining, window));
                }
                true
            }
            Take::Short { remaining } => {
                self.outcome = Outcome::RateLimited {
                    retry_after: reset(window, self.at),
                };
                self.refusing = Some((rate, remaining, window));
                false
            }
            Take::Unlimited => true,
        }
    }

    pub(super) fn credits(&mut self, take: Take) {
        match take {
            Take::Spent { remaining } => self.credits_remaining = Some(remaining),
            Take::Short { remaining } => {
                self.outcome = Outcome::UsageExceeded;
                self.credits_remaining = Some(remaining);
            }
            Take::Unlimited => {}
        }
    }

    /// Puts back the calls the rate limits counted.
    pub(super) fn refund(&self) {
        for (i, (rate, bucket)) in self.limits.rates.iter().enumerate() {
            if self.counted & (1 << i) != 0 {
                bucket.refund(rate.limit.window_at(self.at).index, 1);
            }
        }
    }

    pub(super) fn finish(self) -> Spending {
        let refused = self.outcome != Outcome::Admitted;
        if refused {
            self.refund();
        }
        // A call refused by another limit was not counted after all.
        let fewest = self
            .fewest
            .map(|(l, remaining, window)| (l, remaining + u64::from(refused), window));
        let rate = match (fewest, self.refusing) {
            (Some(f), Some(r)) => Some(if f.1 < r.1 { f } else { r }),
            (f, r) => f.or(r),
        }
        .map(|(rate, remaining, window)| RateState {
            name: Arc::clone(&rate.name),
            limit: rate.limit.limit,
            window: rate.limit.window,
            remaining,
            reset: reset(window, self.at),
        });
        Spending {
            outcome: self.outcome,
            credits_remaining: self.credits_remaining,
            rate,
        }
    }
}

/// How long after `at` `window` ends, in whole seconds rounded up, as the
/// HTTP headers say it.
pub(super) fn reset(window: Window, at: Timestamp) -> Duration {
    let left = window.left_after(at);
    Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
}
