//! Last-used times, written behind: the uses Verify noted in memory
//! ([`latchkey_core::usage`]) go to the database in batches every flush
//! interval, and once more on shutdown, with the moves of tokens found under
//! older HMAC keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use latchkey_core::clock::Clock;
use latchkey_core::usage::{LastUsed, Rekeys};
use latchkey_store::Store;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

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
    /// The day (since the epoch) usage counts were last pruned on.
    pub pruned_day: AtomicI64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days of usage counts kept (GetTokenUsage's longest span).
const USAGE_DAYS: i64 = 90;

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
        // Times and clients may be written twice; the counts, last and in
        // one transaction, once.
        let now = self.clock.now();
        let day = now.as_micros().div_euclid(MICROS_PER_DAY);
        let written = async {
            self.store.record_last_used(&uses).await?;
            self.store.record_clients(&uses).await?;
            self.store.record_usage(day, &uses).await
        }
        .await;
        match written {
            Ok(()) => {
                tracing::debug!(tokens = uses.len(), "last-used times written");
                if let Some(oldest) = uses.iter().filter_map(|u| u.time).min() {
                    let lag = now.saturating_since(oldest);
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
        if self.pruned_day.swap(day, Ordering::Relaxed) != day {
            match self.store.prune_usage(day - USAGE_DAYS).await {
                Ok(rows) => tracing::debug!(rows, "usage counts over 90 days old pruned"),
                Err(e) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "pruning old usage counts failed; will retry tomorrow"
                ),
            }
        }
    }
}
