//! Follows the change log ([`crate::changes`], the reader's state) and drops what this replica's
//! cache holds about each change, whichever replica made it.
//!
//! The log is read every poll interval, and at once when PostgreSQL notifies
//! a commit (or the listening connection was lost, since notifications sent
//! meanwhile are gone). A read that fails is tried again at the next tick; a
//! replica that could not read the log for longer than it is kept cannot
//! know what it missed, and drops its whole cache once it can read again.
//! Old rows are pruned here too (any replica may; deleting twice is harmless).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::changes::{Change, Follower, Freshness, GAP_TIMEOUT};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::verifier::Verifier;
use crate::watch::LogRead;

/// Rows read per query.
const PAGE: u64 = 1_000;

/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The longest wait between attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct ChangeFeed {
    pub store: Store,
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    pub poll_interval: Duration,
    /// PostgreSQL's URL, to listen for notifications; `None`: poll only.
    pub listen_url: Option<String>,
    pub retention: Duration,
    /// Marked after every complete read; readiness follows it.
    pub freshness: Arc<Freshness>,
    /// When the last complete read began, set after each: for the event
    /// log's watchers (events commit with a notification, like changes),
    /// and for warming, which starts after the first read and ends after a
    /// read that began once it had cached its tokens.
    pub read_done: tokio::sync::watch::Sender<LogRead>,
    /// Asks for a read now.
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl ChangeFeed {
    /// Follows the log until `shutdown`.
    ///
    /// # Errors
    /// None so far: every failure is retried.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Some(mut follower) = self.start(&shutdown).await else {
            return Ok(());
        };
        let wake = Arc::clone(&self.wake);
        let relisten = Arc::new(Notify::new());
        if let Some(url) = self.listen_url.clone() {
            tokio::spawn(listen(
                self.store.clone(),
                url,
                Arc::clone(&wake),
                Arc::clone(&relisten),
                shutdown.clone(),
            ));
        }
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        let mut last_prune: Option<Instant> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
            let started = Instant::now();
            match self.read(&mut follower).await {
                Ok(()) => {
                    self.freshness.synced(started);
                    self.read_done.send_replace(Some(started));
                    if last_read.elapsed() > self.retention {
                        tracing::warn!(
                            "the change log could not be read for longer than it is kept; \
                             dropping the whole verification cache"
                        );
                        self.verifier.forget_all();
                    }
                    if failing {
                        tracing::info!("reading the change log again");
                        failing = false;
                    }
                    last_read = Instant::now();
                }
                Err(e) => {
                    self.metrics.change_log_read_errors.inc();
                    // The listening connection may be as stuck as the one
                    // that failed: notifications on it would never come.
                    relisten.notify_one();
                    if !failing {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot read the change log; retrying every poll interval"
                        );
                        failing = true;
                    }
                    continue;
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let before = self.clock.now().saturating_sub(self.retention);
                if let Err(e) = self.store.prune_changes(before).await {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(e)),
                        "pruning the change log"
                    );
                }
                // Rate-limit windows that ended a while ago (a replica whose
                // clock runs a little behind may still count in the last).
                let ended = self.clock.now().saturating_sub(Duration::from_secs(60));
                if let Err(e) = self.store.prune_rate_windows(ended).await {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(e)),
                        "pruning rate-limit windows"
                    );
                }
            }
        }
    }

    /// Where to start reading, once the database tells; `None` if stopped
    /// first.
    async fn start(&self, shutdown: &CancellationToken) -> Option<Follower> {
        loop {
            let settled = self.clock.now().saturating_sub(GAP_TIMEOUT);
            match self.store.change_log_start(settled).await {
                Ok(seq) => return Some(Follower::new(seq)),
                Err(e) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "cannot read the change log's position; retrying"
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Reads every change not yet applied and applies it.
    async fn read(&self, follower: &mut Follower) -> anyhow::Result<()> {
        loop {
            let rows = self
                .store
                .changes_since(follower.seen(), &follower.gaps(), PAGE)
                .await?;
            let full = rows.len() as u64 == PAGE;
            // This process applied its own changes as it made them.
            let fresh = follower.accept(rows, Instant::now());
            for row in fresh.into_iter().filter(|row| !row.ours) {
                match row.change {
                    Change::Token(digest) => self.verifier.forget(&digest),
                    Change::Owner(owner) => self.verifier.forget_owner(&owner).await,
                }
                let lag = self.clock.now().saturating_since(row.time);
                self.metrics.invalidation_lag.observe(lag.as_secs_f64());
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Wakes the reader on every notification, and when the listening
/// connection was lost; connects again with backoff, and when `relisten`
/// says a read of the log failed.
async fn listen(
    store: Store,
    url: String,
    wake: Arc<Notify>,
    relisten: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = store.change_listener(&url) => connected,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    retry_in = ?backoff,
                    "cannot listen for changes; polling meanwhile"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Changes committed before the LISTEN took effect sent nobody a
        // notification: read the log once now.
        wake.notify_one();
        loop {
            let waited = tokio::select! {
                () = shutdown.cancelled() => return,
                () = relisten.notified() => {
                    tracing::debug!("a read of the change log failed; listening on a new connection");
                    wake.notify_one();
                    break;
                }
                waited = listener.wait() => waited,
            };
            match waited {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(e)),
                        "lost the connection listening for changes; connecting again"
                    );
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}
