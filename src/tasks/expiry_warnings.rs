//! Gives EXPIRING events as tokens near their expiry
//! ([`Lifecycle::warn_expiring`]): every replica looks each check
//! interval, and the database's conditional update lets only one give each
//! warning.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;

pub struct ExpiryWarnings {
    pub lifecycle: Arc<Lifecycle>,
    /// The lead times; none: the task has nothing to do.
    pub leads: Vec<Duration>,
    pub interval: Duration,
}

impl ExpiryWarnings {
    /// Looks every interval until `shutdown`.
    ///
    /// # Errors
    /// None: a failed look is logged and tried again at the next tick.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.leads.is_empty() {
            shutdown.cancelled().await;
            return Ok(());
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            match self.lifecycle.warn_expiring(&self.leads).await {
                Ok(given) => {
                    if given > 0 {
                        tracing::debug!(given, "expiry warnings given");
                    }
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(e)),
                        "cannot give expiry warnings; retrying every check interval"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
