//! The lifecycle's requests, before validation, and its pages of results.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use crate::audit::EventFilter;
use crate::clock::Timestamp;
use crate::store::ListFilter;
use latchkey_core::limit::{Credits, RateLimit};

/// How an owner gains an active token, which decides the checks it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gain {
    /// A new token: owner enabled, under the rate, under the active cap.
    Creation,
    /// A new token replacing one at once: enabled, under the rate; the
    /// replaced token leaves the active count as the new one joins it.
    Renewal,
    /// A new token replacing one after a grace period: enabled, under the
    /// rate, and under the active cap, since both secrets live until the
    /// grace period ends (and renewing again and again would otherwise
    /// keep any number alive).
    OverlappingRenewal,
    /// A token brought back: under the active cap.
    Restore,
}

/// Who renews a token, which decides what renewing one that was already
/// replaced does, and whether the new token continues a self-renewal chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Renewer {
    /// An admin (RenewToken): a second renewal of the same token is
    /// refused, and the new token starts a chain of its own.
    Admin,
    /// The token's holder (RenewSelf): the new token continues the chain,
    /// and a replaced token presented again is a retry or a reuse
    /// ([`Lifecycle::replayed`]).
    Holder,
}

/// When a new token expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// This long after creation (already checked positive).
    After(Duration),
    At(Timestamp),
}

/// A CreateToken request, before validation.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub owner: String,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub expiry: Expiry,
    pub idle_timeout: Option<Duration>,
    /// Usage credits (their period and generation are set at creation);
    /// `None`: unlimited.
    pub credits: Option<Credits>,
    /// The token's own rate limits.
    pub rate_limits: Vec<RateLimit>,
}

/// A RenewToken request, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Renewal {
    pub id: Uuid,
    /// How long the old secret keeps working; zero: it is revoked at once.
    pub grace_period: Duration,
    /// `None`: the old token's lifetime length.
    pub expiry: Option<Expiry>,
}

/// A ListTokens request, before validation.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub filter: ListFilter,
    /// 0: the default page size.
    pub page_size: i32,
    pub page_token: String,
}

/// One page and the token for the next (empty on the last page).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// A ListTokenEvents request, before validation.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub filter: EventFilter,
    pub page_size: i32,
    pub page_token: String,
}
