//! Warms the verification cache before this replica reports SERVING: the
//! tokens used within `cache.warm_window`, read in bulk, so that a rollout
//! does not turn every Verify of every restarted replica into a database
//! lookup at once.
//!
//! The read starts once the change feed has read the change log once (it
//! took its position before), so a change committed while the read runs is
//! replayed from there, and the cache drops an answer whose token was
//! invalidated meanwhile (see [`crate::cache::warm`]). Warming ends after a
//! read of the change log that began once the tokens were cached, so a
//! change committed elsewhere during warming is applied before SERVING. A
//! database that cannot be read delays SERVING by at most
//! `cache.warm_timeout`; the replica then serves with what it has, and says
//! so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::verifier::{MissHook, Verifier, Warmed};
use crate::watch::LogRead;

/// The longest pause between attempts to read.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct WarmUp {
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    /// `cache.warm_window`; zero: warming is off.
    pub window: Duration,
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Runs between the read and the caching (tests).
    pub paused: Option<MissHook>,
    /// When the change feed's last complete read began.
    pub feed_read: watch::Receiver<LogRead>,
    /// Asks the change feed for a read.
    pub wake_feed: Arc<Notify>,
    /// Set once warming is over, however it ended: readiness waits for it.
    pub done: watch::Sender<bool>,
}

impl WarmUp {
    /// Warms the cache, or gives up at the timeout or at `shutdown`.
    ///
    /// # Errors
    /// None: a failure to warm is logged, and the replica serves cold.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.window.is_zero() {
            self.done.send_replace(true);
            return Ok(());
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            outcome = tokio::time::timeout(self.timeout, self.warm()) => outcome,
        };
        let took = started.elapsed();
        self.metrics.cache_warm_seconds.set(took.as_secs_f64());
        match outcome {
            Ok(warmed) => {
                self.metrics
                    .cache_warmed_tokens
                    .set(i64::try_from(warmed.cached).unwrap_or(i64::MAX));
                tracing::info!(
                    tokens = warmed.cached,
                    changed_meanwhile = warmed.read - warmed.cached,
                    seconds = took.as_secs_f64(),
                    "cache warmed with the tokens used within cache.warm_window"
                );
            }
            Err(_) => tracing::warn!(
                timeout = ?self.timeout,
                "could not warm the cache within cache.warm_timeout; serving cold \
                 (every token's first Verify reads the database)"
            ),
        }
        self.done.send_replace(true);
        Ok(())
    }

    /// Reads and caches between two reads of the change log, trying again
    /// while the database cannot be read.
    async fn warm(&self) -> Warmed {
        let mut feed_read = self.feed_read.clone();
        let _ = feed_read.wait_for(Option::is_some).await;
        let since = self.clock.now().saturating_sub(self.window);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.verifier.warm(since, self.paused.as_ref()).await {
                Ok(warmed) => {
                    let cached = Instant::now();
                    self.wake_feed.notify_one();
                    let _ = feed_read
                        .wait_for(|read| read.is_some_and(|began| began > cached))
                        .await;
                    return warmed;
                }
                Err(e) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    retry_in = ?backoff,
                    "cannot read the tokens to warm the cache with; retrying"
                ),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
