//! Last-used times: recorded in memory on the Verify path, written behind in
//! batches by [`LastUsedFlusher`].
//!
//! The hot path touches only the token's own [`UseCell`] (an atomic max and a
//! flag); the shared queue's lock is taken at most once per token per flush
//! interval, when the token is first used since the last flush.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::{Clock, Timestamp};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::rekey::Rekeys;

/// One token's latest use not yet written, and whether it is queued.
#[derive(Debug, Default)]
pub struct UseCell {
    latest: AtomicI64,
    queued: AtomicBool,
}

impl UseCell {
    /// The latest use recorded here, written or not; `None` if none.
    pub fn latest(&self) -> Option<Timestamp> {
        match self.latest.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Timestamp::from_micros(t)),
        }
    }
}

/// Whatever holds a token's [`UseCell`]: the cached snapshot carries its own,
/// so recording a use allocates nothing.
pub trait HoldsUses: Send + Sync + 'static {
    fn uses(&self) -> &UseCell;
}

impl HoldsUses for UseCell {
    fn uses(&self) -> &UseCell {
        self
    }
}

/// Uses waiting to be written.
#[derive(Default)]
pub struct LastUsed {
    queue: Mutex<Vec<(Uuid, Arc<dyn HoldsUses>)>>,
    /// Uses whose write failed, retried with the next batch.
    retry: Mutex<HashMap<Uuid, Timestamp>>,
}

impl LastUsed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that token `id` was used at `at`.
    pub fn record<H: HoldsUses>(&self, id: Uuid, holder: &Arc<H>, at: Timestamp) {
        let cell = holder.uses();
        // SeqCst on both sides: a flush that clears `queued` and then reads
        // `latest` either sees this time, or this call sees `queued` false and
        // queues the token again.
        cell.latest.fetch_max(at.as_micros(), Ordering::SeqCst);
        if !cell.queued.load(Ordering::Relaxed) && !cell.queued.swap(true, Ordering::SeqCst) {
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, Arc::clone(holder) as Arc<dyn HoldsUses>));
        }
    }

    /// Takes every pending use, one (latest) time per token.
    pub fn drain(&self) -> Vec<(Uuid, Timestamp)> {
        let queued =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut latest =
            std::mem::take(&mut *self.retry.lock().unwrap_or_else(PoisonError::into_inner));
        for (id, holder) in queued {
            let cell = holder.uses();
            cell.queued.store(false, Ordering::SeqCst);
            let t = Timestamp::from_micros(cell.latest.load(Ordering::SeqCst));
            latest
                .entry(id)
                .and_modify(|e| *e = (*e).max(t))
                .or_insert(t);
        }
        latest.into_iter().collect()
    }

    /// Puts back uses whose write failed.
    pub fn retry_later(&self, uses: Vec<(Uuid, Timestamp)>) {
        let mut retry = self.retry.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, t) in uses {
            retry
                .entry(id)
                .and_modify(|e| *e = (*e).max(t))
                .or_insert(t);
        }
    }
}

/// Writes pending last-used times every `interval`, and once more on
/// shutdown; with them, moves tokens Verify found under an older HMAC key to
/// the primary key ([`Rekeys`]).
pub struct LastUsedFlusher {
    pub store: Store,
    pub last_used: Arc<LastUsed>,
    pub interval: Duration,
    pub rekeys: Arc<Rekeys>,
    /// The primary key's id, recorded with each moved token.
    pub primary_key_id: String,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

impl LastUsedFlusher {
    /// Runs until `shutdown` is cancelled, then flushes what is left.
    ///
    /// # Errors
    /// Never on a database fault (those are logged and retried); the result
    /// type is the task contract's.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await,
                () = shutdown.cancelled() => {
                    self.flush().await;
                    return Ok(());
                }
            }
        }
    }

    /// Writes every pending use in batched statements, then every pending
    /// move to the primary key.
    pub async fn flush(&self) {
        self.flush_uses().await;
        let moves = self.rekeys.drain();
        if moves.is_empty() {
            return;
        }
        match self.store.rekey_tokens(&moves, &self.primary_key_id).await {
            Ok(moved) => tracing::info!(
                tokens = moved,
                key_id = %self.primary_key_id,
                "tokens found under older keys now stored under the primary key"
            ),
            // Each comes back at its token's next use.
            Err(e) => tracing::warn!(
                tokens = moves.len(),
                error = format!("{:#}", anyhow::Error::from(e)),
                "moving tokens to the primary key failed"
            ),
        }
    }

    async fn flush_uses(&self) {
        let uses = self.last_used.drain();
        if uses.is_empty() {
            return;
        }
        match self.store.record_last_used(&uses).await {
            Ok(()) => {
                tracing::debug!(tokens = uses.len(), "last-used times written");
                if let Some(oldest) = uses.iter().map(|(_, t)| *t).min() {
                    let lag = self.clock.now().saturating_since(oldest);
                    self.metrics.last_used_flush_lag.observe(lag.as_secs_f64());
                }
            }
            Err(e) => {
                self.metrics.last_used_write_errors.inc();
                tracing::warn!(
                    tokens = uses.len(),
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "writing last-used times failed; will retry"
                );
                self.last_used.retry_later(uses);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_uses_of_one_token_queue_it_once_with_the_latest_time() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        for t in [5, 9, 7] {
            lu.record(id, &cell, Timestamp::from_micros(t));
        }
        assert_eq!(lu.queue.lock().unwrap().len(), 1);
        assert_eq!(lu.drain(), vec![(id, Timestamp::from_micros(9))]);
        assert!(lu.drain().is_empty());
    }

    #[test]
    fn a_use_after_a_drain_is_queued_again() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        lu.record(id, &cell, Timestamp::from_micros(1));
        lu.drain();
        lu.record(id, &cell, Timestamp::from_micros(2));
        assert_eq!(lu.drain(), vec![(id, Timestamp::from_micros(2))]);
    }

    #[test]
    fn failed_writes_come_back_merged_with_newer_uses() {
        let lu = LastUsed::new();
        let cell = Arc::new(UseCell::default());
        let id = Uuid::now_v7();
        lu.retry_later(vec![(id, Timestamp::from_micros(3))]);
        lu.record(id, &cell, Timestamp::from_micros(8));
        assert_eq!(lu.drain(), vec![(id, Timestamp::from_micros(8))]);
    }
}
