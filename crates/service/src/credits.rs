//! Spending a token's usage credits on this replica: what it has taken from
//! the database and not yet spent, per token.
//!
//! A call spends from what this replica holds; when that is not enough it
//! takes another block from the database ([`Store::take_credits`], a
//! compare-and-set update, so replicas never take the same credit). The
//! total spent over every replica therefore never exceeds what the token
//! was given. A replica killed with credits in hand loses them; one that
//! stops gracefully gives them back ([`CreditBook::give_back`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::error::Error;
use crate::store::{CreditTake, Store};

/// What spending found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// Spent; about this many are left (the database's count at this
    /// replica's last take, plus what it still holds).
    Spent { remaining: u64 },
    /// Not enough left: nothing was spent.
    Exceeded { remaining: u64 },
    /// The token has no credits now (its snapshot was older).
    Unlimited,
}

/// The credits a replica holds for one token.
#[derive(Debug, Default)]
struct Held {
    /// Taken from the database, not yet spent.
    left: u64,
    /// The database's count after this replica's last take.
    in_database: u64,
}

/// Credits taken and not yet spent, per token: one entry for each token with
/// credits this replica has served (a few words each).
pub struct CreditBook {
    store: Store,
    held: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Held>>>>,
}

impl CreditBook {
    pub fn new(store: Store) -> Self {
        CreditBook {
            store,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Spends `cost` of token `id`'s credits (at least 1).
    ///
    /// # Errors
    /// `Unavailable` if more had to be taken and the database could not be
    /// reached: the call fails closed.
    pub async fn spend(&self, id: Uuid, cost: u64, now: Timestamp) -> Result<Spent, Error> {
        let entry = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(held.entry(id).or_default())
        };
        // One take at a time per token on this replica; calls on other
        // tokens go on.
        let mut held = entry.lock().await;
        if held.left < cost {
            match self.store.take_credits(id, cost - held.left, now).await? {
                CreditTake::Taken { taken, left } => {
                    held.left += taken;
                    held.in_database = left;
                }
                CreditTake::Short { left } => {
                    held.in_database = left;
                    return Ok(Spent::Exceeded {
                        remaining: held.left + left,
                    });
                }
                CreditTake::Unlimited => return Ok(Spent::Unlimited),
                // Deleted since its snapshot was taken: nothing to spend.
                CreditTake::Missing => return Ok(Spent::Exceeded { remaining: 0 }),
            }
        }
        held.left -= cost;
        Ok(Spent::Spent {
            remaining: held.left + held.in_database,
        })
    }

    /// Gives every credit taken and not spent back to the database (at a
    /// graceful stop). Returns how many were given back.
    ///
    /// # Errors
    /// Store faults (what was not given back is lost, never spent twice).
    pub async fn give_back(&self) -> Result<u64, Error> {
        let held: Vec<_> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.drain().collect()
        };
        let mut given = 0;
        for (id, entry) in held {
            let mut entry = entry.lock().await;
            if entry.left > 0 {
                self.store.return_credits(id, entry.left).await?;
                given += entry.left;
                entry.left = 0;
            }
        }
        Ok(given)
    }
}
