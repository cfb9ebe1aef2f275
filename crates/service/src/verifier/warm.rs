//! Warming the cache before a replica serves: the tokens used recently,
//! read in one query and cached by the rule fills follow (see
//! [`crate::cache::warm`]), so that a restart does not send every Verify
//! to the database at once.

use std::sync::Arc;

use super::{MissHook, Snapshot, Verifier};
use crate::clock::Timestamp;
use crate::error::Error;
use crate::token::Digest;

/// What warming did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Tokens read.
    pub read: u64,
    /// Of those, tokens cached (the others were changed, or looked up by
    /// Verify, while the read ran).
    pub cached: u64,
}

impl Verifier {
    /// Caches the tokens stored under the primary key and used at or after
    /// `since`, the most recently used first, up to the cache's capacity.
    /// `paused` runs between the read and the caching (tests use it to
    /// commit changes there). With the cache off, reads nothing.
    ///
    /// # Errors
    /// `Unavailable` (or a store fault) if the database cannot be read.
    pub async fn warm(&self, since: Timestamp, paused: Option<&MissHook>) -> Result<Warmed, Error> {
        let capacity = self.cache.capacity();
        if capacity == 0 {
            return Ok(Warmed::default());
        }
        // Before the read: whatever is invalidated from here on, by the
        // change log or by this replica's own changes, is not kept.
        let ticket = self.cache.begin_warm();
        let mut read: Vec<(Digest, Arc<Snapshot>)> = Vec::new();
        self.store
            .recently_used(
                self.keys.primary().id(),
                since,
                capacity,
                |digest, found| {
                    let snapshot = crate::memory::long_lived(|| Arc::new(self.snapshot(&found)));
                    read.push((digest, snapshot));
                },
            )
            .await?;
        if let Some(paused) = paused {
            paused().await;
        }
        let mut warmed = Warmed {
            read: read.len() as u64,
            cached: 0,
        };
        crate::memory::long_lived(|| {
            for (digest, snapshot) in read {
                if self.cache.warm(&ticket, digest, snapshot) {
                    warmed.cached += 1;
                }
            }
        });
        Ok(warmed)
    }
}
