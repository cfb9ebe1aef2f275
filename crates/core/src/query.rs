//! The vocabulary of reads and changes the API asks of the store: which
//! tokens to list, where a page starts, what an update changes.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::token::Status;

/// Which tokens ListTokens wants.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// `None`: every owner.
    pub owner: Option<String>,
    /// Empty: every status.
    pub statuses: Vec<Status>,
    /// Only tokens expiring before this time (never-expiring ones are left
    /// out).
    pub expire_before: Option<Timestamp>,
}

/// A position in a newest-first order: the last row of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub time: Timestamp,
    pub id: Uuid,
}

/// The fields UpdateToken may change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub rate_limits: Option<Vec<crate::limit::RateLimit>>,
    /// `Some(None)`: unlimited from now on. Credits set anew start a new
    /// generation (replicas drop what they held).
    pub credits: Option<Option<crate::limit::Credits>>,
}
