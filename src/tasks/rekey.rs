//! Tokens that Verify found under an older HMAC key, waiting to be stored
//! under the primary one: Verify holds the token at that moment, so it can
//! compute the new digest, and the last-used flusher writes the moves behind
//! (Verify itself never writes).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

use crate::token::Digest;

/// Most moves held at once; past it new ones wait for the token's next use.
const MAX_QUEUED: usize = 100_000;

/// A token's move: its id, the digest it is stored under, the primary's.
pub type Rekey = (Uuid, Digest, Digest);

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
