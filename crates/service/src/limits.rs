//! Spending a token's usage limits on this replica: its rate limits (the
//! token's own and its owner's) and its credits.
//!
//! Each limit is a [`Bucket`]: what this replica has taken from the
//! database and not yet spent. A call spends from what the bucket holds,
//! under a lock held for a few instructions; when that is not enough it
//! takes another block from the database ([`Store::take_credits`],
//! [`Store::take_rate`]: a compare-and-set update, so replicas never take
//! the same credit or call). While plenty is left, the next block is taken
//! in the background before the bucket runs dry, so calls on a busy token
//! seldom wait for the database. Blocks shrink as the count runs low (a
//! sixteenth of what is left), so the last ones are shared one at a time:
//! the total admitted over every replica never exceeds the limit, and a
//! call is refused only when the database has no more to give.
//!
//! A replica killed with credits in hand loses them; one that stops
//! gracefully gives them back ([`Allowances::give_back`]). Calls taken for
//! a window and not admitted when it ends are not counted again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{CreditTake, RateTake, Store};
use latchkey_core::limit::{Credits, RateLimit, Window};

/// After a database take found a credit count short, calls on the token
/// are refused from memory for this long before it is read again (a
/// replica stopping may give some back).
const SHORT_CREDITS_RECHECK: Duration = Duration::from_secs(1);
/// The next block is taken ahead only when blocks are at least this big:
/// near the end of a count, blocks are taken one call at a time.
const PREFETCH_MIN_BLOCK: u64 = 64;
/// The block a replica asks for at first, and at least.
const FIRST_BLOCK: u64 = 1000;
/// Blocks taken closer together than this double; farther apart than
/// [`SLOW_TAKES`], they halve: a busy token's block lasts a while.
const FAST_TAKES: Duration = Duration::from_millis(250);
const SLOW_TAKES: Duration = Duration::from_secs(2);

/// The limits of one token, found when its answer is cached: the buckets
/// of its rate limits (its own, then its owner's) and of its credits.
#[derive(Debug)]
pub struct Limits {
    rates: Vec<(Rate, Arc<Bucket>)>,
    credits: Option<(Credits, Arc<Bucket>)>,
}

/// A rate limit as spending reads it.
#[derive(Debug)]
struct Rate {
    /// Shared with every answer about it.
    name: Arc<str>,
    limit: RateLimit,
}

impl Rate {
    /// Where its bucket takes more for a call in `window`.
    fn source(&self, window: Window) -> Source {
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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Credits(Uuid),
    /// `t/<token id>/<name>` or `o/<owner>/<name>` (names hold no `/`).
    Rate(Arc<str>),
}

/// Where a bucket takes more from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Credits, for a call in `epoch` (the generation and refill period
    /// its answer knows of).
    Credits {
        epoch: i64,
    },
    Rate {
        limit: u64,
        window: Window,
    },
}

impl Source {
    /// What a bucket's share belongs to: the window of a rate limit, the
    /// epoch of credits. Only grows.
    fn window(self) -> i64 {
        match self {
            Source::Credits { epoch } => epoch,
            Source::Rate { window, .. } => window.index,
        }
    }
}

/// One limit's share on this replica.
#[derive(Debug)]
pub struct Bucket {
    key: Key,
    state: Mutex<State>,
    /// One database take at a time per bucket on this replica.
    taking: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The window (rate limits) or epoch (credits) what is held belongs
    /// to.
    window: i64,
    /// Taken from the database, not yet spent.
    held: u64,
    /// The database's count after this replica's last take.
    in_database: u64,
    /// The last block taken.
    block: u64,
    /// The database had too few at the last take: refuse from memory
    /// until then (for rate limits, until the window ends).
    short_until: Option<Instant>,
    /// A take ahead is under way.
    prefetching: bool,
    /// The block size to ask for, and when the last take began.
    want: u64,
    last_take: Option<Instant>,
}

/// What one bucket's spend found.
enum Take {
    Spent {
        remaining: u64,
    },
    Short {
        remaining: u64,
    },
    /// The token has no credits now (its answer was older).
    Unlimited,
}

impl Bucket {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spends from what is held, if it can be judged without the database.
    /// The second value says whether to take the next block ahead.
    fn spend_held(&self, window: i64, need: u64) -> Option<(Take, bool)> {
        let mut s = self.lock();
        if window > s.window {
            *s = State {
                window,
                want: s.want,
                last_take: s.last_take,
                ..State::default()
            };
        } else if window < s.window {
            // A call from a window that has just ended: to the database.
            return None;
        }
        if s.held >= need {
            s.held -= need;
            let ahead =
                !s.prefetching && s.held < s.block / 2 && s.in_database / 16 >= PREFETCH_MIN_BLOCK;
            if ahead {
                s.prefetching = true;
            }
            return Some((
                Take::Spent {
                    remaining: s.held + s.in_database,
                },
                ahead,
            ));
        }
        match s.short_until {
            Some(until) if need > s.held + s.in_database && Instant::now() < until => Some((
                Take::Short {
                    remaining: s.held + s.in_database,
                },
                false,
            )),
            _ => None,
        }
    }

    /// The block size to ask for now: it doubles while takes come fast
    /// and halves when they come slowly.
    fn want(&self) -> u64 {
        let mut s = self.lock();
        let now = Instant::now();
        let want = s.want.max(FIRST_BLOCK);
        s.want = match s.last_take.map(|t| now.duration_since(t)) {
            Some(d) if d < FAST_TAKES => want.saturating_mul(2),
            Some(d) if d > SLOW_TAKES => (want / 2).max(FIRST_BLOCK),
            _ => want,
        };
        s.last_take = Some(now);
        s.want
    }

    /// What is held for `window`.
    fn held(&self, window: i64) -> u64 {
        let s = self.lock();
        if s.window == window { s.held } else { 0 }
    }

    /// Adds what a take found (if the window is still the same).
    fn add(&self, window: i64, taken: u64, in_database: u64, short: Option<Instant>) {
        let mut s = self.lock();
        if s.window != window {
            return;
        }
        s.held += taken;
        s.in_database = in_database;
        if taken > 0 {
            s.block = taken;
        }
        s.short_until = short;
    }

    /// Puts back what a call spent and then did not use.
    fn refund(&self, window: i64, amount: u64) {
        let mut s = self.lock();
        if s.window == window {
            s.held += amount;
        }
    }
}

/// Every limit this replica has spent from, by key: one small entry each.
pub struct Allowances {
    store: Store,
    buckets: Mutex<HashMap<Key, Arc<Bucket>>>,
}

impl Allowances {
    pub fn new(store: Store) -> Self {
        Allowances {
            store,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, key: Key) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(buckets.entry(key.clone()).or_insert_with(|| {
            Arc::new(Bucket {
                key,
                state: Mutex::default(),
                taking: tokio::sync::Mutex::new(()),
            })
        }))
    }

    /// The limits of token `id` of `owner`, or `None` if it has none.
    pub fn limits(
        &self,
        id: Uuid,
        owner: &str,
        credits: Option<Credits>,
        own: &[RateLimit],
        owners: &[RateLimit],
    ) -> Option<Box<Limits>> {
        if credits.is_none() && own.is_empty() && owners.is_empty() {
            return None;
        }
        let rate = |prefix: String, l: &RateLimit| {
            let key = Key::Rate(format!("{prefix}/{}", l.name).into());
            let rate = Rate {
                name: l.name.as_str().into(),
                limit: l.clone(),
            };
            (rate, self.bucket(key))
        };
        let rates = own
            .iter()
            .map(|l| rate(format!("t/{id}"), l))
            .chain(owners.iter().map(|l| rate(format!("o/{owner}"), l)))
            .collect();
        Some(Box::new(Limits {
            rates,
            credits: credits.map(|c| (c, self.bucket(Key::Credits(id)))),
        }))
    }

    /// Counts one call against every rate limit and spends `cost` credits
    /// (at least 1), all or nothing, from what this replica holds: `None`,
    /// having spent nothing, when more must be taken from the database
    /// ([`Allowances::spend`]). Never waits.
    pub fn spend_held(&self, limits: &Limits, cost: u64, at: Timestamp) -> Option<Spending> {
        let mut tally = Tally::new(limits, at);
        for (i, (rate, bucket)) in limits.rates.iter().enumerate() {
            let window = rate.limit.window_at(at);
            let Some(take) = self.take_held(bucket, rate.source(window), 1, at) else {
                tally.refund();
                return None;
            };
            if !tally.rate(i, rate, window, take) {
                break;
            }
        }
        if tally.outcome == Outcome::Admitted
            && let Some((credits, bucket)) = &limits.credits
        {
            let source = Source::Credits {
                epoch: credits.epoch_at(at),
            };
            let Some(take) = self.take_held(bucket, source, cost, at) else {
                tally.refund();
                return None;
            };
            tally.credits(take);
        }
        Some(tally.finish())
    }

    /// [`Allowances::spend_held`], taking more from the database where what
    /// is held is not enough.
    ///
    /// # Errors
    /// `Unavailable` if more had to be taken and the database could not be
    /// reached: the call fails closed, having spent nothing.
    pub async fn spend(
        &self,
        limits: &Limits,
        cost: u64,
        at: Timestamp,
    ) -> Result<Spending, Error> {
        let mut tally = Tally::new(limits, at);
        for (i, (rate, bucket)) in limits.rates.iter().enumerate() {
            let window = rate.limit.window_at(at);
            let take = self
                .take(bucket, rate.source(window), 1, at)
                .await
                .inspect_err(|_| tally.refund())?;
            if !tally.rate(i, rate, window, take) {
                break;
            }
        }
        if tally.outcome == Outcome::Admitted
            && let Some((credits, bucket)) = &limits.credits
        {
            let source = Source::Credits {
                epoch: credits.epoch_at(at),
            };
            let take = self
                .take(bucket, source, cost, at)
                .await
                .inspect_err(|_| tally.refund())?;
            tally.credits(take);
        }
        Ok(tally.finish())
    }

    /// Spends `need` from what `bucket` holds, starting to take the next
    /// block ahead when it runs low; `None` if the database must say.
    fn take_held(
        &self,
        bucket: &Arc<Bucket>,
        source: Source,
        need: u64,
        at: Timestamp,
    ) -> Option<Take> {
        let (take, ahead) = bucket.spend_held(source.window(), need)?;
        if ahead {
            self.take_ahead(bucket, source, at);
        }
        Some(take)
    }

    /// Spends `need` from `bucket`, taking more from the database when
    /// what it holds is not enough.
    async fn take(
        &self,
        bucket: &Arc<Bucket>,
        source: Source,
        need: u64,
        at: Timestamp,
    ) -> Result<Take, Error> {
        match self.take_held(bucket, source, need, at) {
            Some(take) => Ok(take),
            None => self.take_more(bucket, source, need, at).await,
        }
    }

    /// [`Allowances::take`] when what is held is not enough, or the
    /// database must say.
    async fn take_more(
        &self,
        bucket: &Arc<Bucket>,
        source: Source,
        need: u64,
        at: Timestamp,
    ) -> Result<Take, Error> {
        let window = source.window();
        let _taking = bucket.taking.lock().await;
        // Another call may have taken meanwhile.
        if let Some((take, _)) = bucket.spend_held(window, need) {
            return Ok(take);
        }
        let held = bucket.held(window);
        let need_more = need.saturating_sub(held).max(1);
        let short = match source {
            Source::Credits { .. } => Instant::now() + SHORT_CREDITS_RECHECK,
            Source::Rate { window, .. } => Instant::now() + window.left_after(at),
        };
        let want = bucket.want();
        let (taken, left) = match take_from_database(
            &self.store,
            &bucket.key,
            source,
            need_more,
            at,
            want,
        )
        .await?
        {
            Taken::Some {
                taken,
                left,
                window: w,
            } if w == window => (taken, left),
            // Taken for a newer epoch than this call's answer knows
            // of: exactly what this call spends, nothing kept.
            Taken::Some { left, .. } => return Ok(Take::Spent { remaining: left }),
            Taken::Short { left } => {
                bucket.add(window, 0, left, Some(short));
                return Ok(Take::Short {
                    remaining: held + left,
                });
            }
            Taken::Unlimited => return Ok(Take::Unlimited),
        };
        bucket.add(window, taken, left, None);
        Ok(bucket
            .spend_held(window, need)
            .map_or(Take::Spent { remaining: left }, |(take, _)| take))
    }

    /// Takes `bucket`'s next block in the background.
    fn take_ahead(&self, bucket: &Arc<Bucket>, source: Source, at: Timestamp) {
        let store = self.store.clone();
        let bucket = Arc::clone(bucket);
        tokio::spawn(async move {
            let window = source.window();
            {
                let _taking = bucket.taking.lock().await;
                if let Ok(Taken::Some {
                    taken,
                    left,
                    window: w,
                }) = take_from_database(&store, &bucket.key, source, 1, at, bucket.want()).await
                    && w == window
                {
                    bucket.add(window, taken, left, None);
                }
            }
            bucket.lock().prefetching = false;
        });
    }

    /// Gives every credit taken and not spent back to the database (at a
    /// graceful stop). Returns how many were given back.
    ///
    /// # Errors
    /// Store faults (what was not given back is lost, never spent twice).
    pub async fn give_back(&self) -> Result<u64, Error> {
        let buckets: Vec<_> = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets.drain().collect()
        };
        let mut given = 0;
        for (key, bucket) in buckets {
            let Key::Credits(id) = key else { continue };
            let _taking = bucket.taking.lock().await;
            let (held, epoch) = {
                let mut s = bucket.lock();
                (std::mem::take(&mut s.held), s.window)
            };
            if held > 0 {
                self.store.return_credits(id, held, epoch).await?;
                given += held;
            }
        }
        Ok(given)
    }
}

/// Takes at least `need` for the limit `key` from the database.
async fn take_from_database(
    store: &Store,
    key: &Key,
    source: Source,
    need: u64,
    at: Timestamp,
    want: u64,
) -> Result<Taken, Error> {
    Ok(match (key, source) {
        (Key::Credits(id), Source::Credits { epoch }) => {
            match store.take_credits(*id, need, at, epoch, want).await? {
                CreditTake::Taken { taken, left, epoch } => Taken::Some {
                    taken,
                    left,
                    window: epoch,
                },
                CreditTake::Short { left } => Taken::Short { left },
                CreditTake::Unlimited => Taken::Unlimited,
                // Deleted since its answer was cached: nothing to spend.
                CreditTake::Missing => Taken::Short { left: 0 },
            }
        }
        (Key::Rate(key), Source::Rate { limit, window }) => {
            match store.take_rate(key, window, need, limit, want).await? {
                RateTake::Taken { taken, left } => Taken::Some {
                    taken,
                    left,
                    window: window.index,
                },
                RateTake::Short { left } => Taken::Short { left },
            }
        }
        (Key::Rate(_), Source::Credits { .. }) | (Key::Credits(_), Source::Rate { .. }) => {
            Taken::Unlimited
        }
    })
}

/// What one call has spent so far, and what its answer will say: kept
/// alike by [`Allowances::spend_held`] and [`Allowances::spend`].
struct Tally<'a> {
    limits: &'a Limits,
    at: Timestamp,
    /// Which rate limits counted the call (at most 16: 8 of the token, 8
    /// of its owner).
    counted: u32,
    /// Of those, the one with the fewest calls left, and the one that
    /// refused the call: its calls left and its window.
    fewest: Option<(&'a Rate, u64, Window)>,
    refusing: Option<(&'a Rate, u64, Window)>,
    outcome: Outcome,
    credits_remaining: Option<u64>,
}

impl<'a> Tally<'a> {
    fn new(limits: &'a Limits, at: Timestamp) -> Self {
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
    fn rate(&mut self, i: usize, rate: &'a Rate, window: Window, take: Take) -> bool {
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

    fn credits(&mut self, take: Take) {
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
    fn refund(&self) {
        for (i, (rate, bucket)) in self.limits.rates.iter().enumerate() {
            if self.counted & (1 << i) != 0 {
                bucket.refund(rate.limit.window_at(self.at).index, 1);
            }
        }
    }

    fn finish(self) -> Spending {
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
fn reset(window: Window, at: Timestamp) -> Duration {
    let left = window.left_after(at);
    Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
}

/// What a database take found.
enum Taken {
    /// `window`: what the taken share belongs to.
    Some {
        taken: u64,
        left: u64,
        window: i64,
    },
    Short {
        left: u64,
    },
    Unlimited,
}
