//! What the request path notes for background work to write: each token's
//! latest use ([`LastUsed`], written behind in batches by the binary's
//! flusher, so Verify never writes), and tokens found under an older HMAC
//! key ([`Rekeys`]), to be stored under the primary one.
//!
//! The hot path touches only the token's own [`UseCell`] (an atomic max and a
//! flag); the shared queue's lock is taken at most once per token per flush,
//! when the token is first used since the last one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::token::Digest;

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

/// Most moves held at once; past it new ones wait for the token's next use.
const MAX_QUEUED: usize = 100_000;

/// A token's move: its id, the digest it is stored under, the primary's.
pub type Rekey = (Uuid, Digest, Digest);

/// Tokens found under an older HMAC key, waiting to move to the primary.
#[derive(Debug, Default)]
pub struct Rekeys {
    queue: Mutex<HashMap<Uuid, (Digest, Digest)>>,
}

impl Rekeys {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, id: Uuid, stored: Digest, primary: Digest) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() < MAX_QUEUED || queue.contains_key(&id) {
            queue.insert(id, (stored, primary));
        }
    }

    pub fn drain(&self) -> Vec<Rekey> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue
            .drain()
            .map(|(id, (old, new))| (id, old, new))
            .collect()
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
