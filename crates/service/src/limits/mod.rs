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

mod bucket;
mod spending;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use bucket::{Bucket, Key, Source, Take};
use spending::{Rate, Tally};

pub use spending::{Limits, Outcome, RateState, Spending};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{CreditTake, RateTake, Store};
use latchkey_core::limit::{Credits, RateLimit};

/// After a database take found a credit count short, calls on the token
/// are refused from memory for this long before it is read again (a
/// replica stopping may give some back).
const SHORT_CREDITS_RECHECK: Duration = Duration::from_secs(1);
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
        Arc::clone(
            buckets
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Bucket::new(key))),
        )
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
            bucket.ahead_done();
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
            let (held, epoch) = bucket.take_all();
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
