//! EXPIRING warnings: once per token and lead time, across replicas.

use std::time::Duration;

use super::Lifecycle;
use super::writing::rfc3339;
use crate::audit::{Event, EventKind};
use crate::auth::Actor;
use crate::error::Error;
use crate::store::Due;

/// Tokens marked per transaction.
const BATCH: u64 = 500;

impl Lifecycle {
    /// Gives the EXPIRING events due now, for each lead time in `leads`:
    /// a token is warned at the shortest lead time its expiry lies within,
    /// if it lived longer than that lead and was not warned at it (or a
    /// shorter one) before. Returns how many were given.
    ///
    /// # Errors
    /// Store faults; the warnings committed before stay given.
    #[tracing::instrument(skip_all)]
    pub async fn warn_expiring(&self, leads: &[Duration]) -> Result<usize, Error> {
        let mut leads = leads.to_vec();
        leads.sort();
        leads.dedup();
        let now = self.clock.now();
        let mut given = 0;
        for (i, lead) in leads.iter().enumerate() {
            let due = Due {
                lead: *lead,
                shorter: i.checked_sub(1).map_or(Duration::ZERO, |s| leads[s]),
                limit: BATCH,
            };
            loop {
                let txn = self.store.begin().await?;
                let marked = txn.mark_expiry_warned(due, now).await?;
                let events: Vec<Event> = marked
                    .iter()
                    .map(|record| {
                        let expire_time = record.expire_time.map(rfc3339).unwrap_or_default();
                        self.event(
                            EventKind::Expiring,
                            record,
                            Actor::System,
                            now,
                            [
                                ("lead", humantime::format_duration(*lead).to_string()),
                                ("expire_time", expire_time),
                            ],
                        )
                    })
                    .collect();
                txn.insert_events(&events).await?;
                txn.commit().await?;
                given += marked.len();
                if (marked.len() as u64) < BATCH {
                    break;
                }
            }
        }
        Ok(given)
    }
}
