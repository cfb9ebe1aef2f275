//! Owners: the subject a token acts for. An owner can be disabled (its tokens
//! then verify as OWNER_DISABLED, keeping their own status) and enabled again;
//! an owner with no record is enabled.

use crate::clock::Timestamp;
use crate::limit::RateLimit;
use crate::token::Status;

/// What is stored about an owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerRecord {
    pub owner: String,
    /// Set while the owner is disabled.
    pub disable_time: Option<Timestamp>,
    /// Why it was disabled; empty while enabled.
    pub reason: String,
    /// Shared by all of the owner's tokens.
    pub rate_limits: Vec<RateLimit>,
}

impl OwnerRecord {
    /// The record of an owner nobody has disabled.
    pub fn enabled(owner: &str) -> Self {
        OwnerRecord {
            owner: owner.to_owned(),
            ..OwnerRecord::default()
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.disable_time.is_some()
    }
}

/// An owner's tokens, counted by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub active: u64,
    pub revoked: u64,
    pub expired: u64,
    pub inactive: u64,
}

impl TokenCounts {
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Active => self.active += 1,
            Status::Revoked => self.revoked += 1,
            Status::Expired => self.expired += 1,
            Status::Inactive => self.inactive += 1,
        }
    }
}
