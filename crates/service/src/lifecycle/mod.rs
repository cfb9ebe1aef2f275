//! The token lifecycle: create, read, list, update, revoke, restore, delete and
//! renew tokens; disable, enable and clear owners; the creation limits; the
//! audit trail.
//!
//! Every field is checked before anything is written, so a refused request
//! writes nothing. Every change runs in one store transaction together with
//! its audit event and, if it changes how a token verifies, a change-log row
//! for the other replicas ([`crate::changes`]); it invalidates this process's
//! cache entries after it commits and before it returns.

mod expiry;
mod leaks;
mod owners;
mod paging;
mod renewal;
mod requests;
mod self_renewal;
mod settings;
mod tokens;
mod usage;
mod writing;

use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::store::Store;
use crate::token::{Prefix, TokenKey};
use crate::verifier::Invalidate;

pub use leaks::Leak;
pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use requests::{EventQuery, Expiry, ListQuery, NewToken, Page, Renewal};
pub use self_renewal::SELF_REVOKE_REASON;
pub use settings::{ADMIN_OWNER, Limits, Policy, RATE_WINDOW, SelfRenew, Settings};
pub use tokens::KeyUsage;
pub use usage::{DEFAULT_USAGE_DAYS, MAX_USAGE_DAYS, UsageDay};

pub struct Lifecycle {
    store: Store,
    cache: Arc<dyn Invalidate>,
    key: TokenKey,
    prefix: Prefix,
    clock: Arc<dyn Clock>,
    policy: Policy,
    limits: Limits,
    self_renew: SelfRenew,
    /// Keeps ids minted in one millisecond in creation order, so that
    /// newest-first paging never shows a later token after an earlier one.
    ids: Mutex<uuid::ContextV7>,
}

impl Lifecycle {
    /// A lifecycle on `store`, dropping changed tokens from `cache`, judging
    /// time by `clock`, as `settings` say.
    pub fn new(
        store: Store,
        cache: Arc<dyn Invalidate>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        let Settings {
            key,
            prefix,
            policy,
            limits,
            self_renew,
        } = settings;
        Lifecycle {
            store,
            cache,
            key,
            prefix,
            clock,
            policy,
            limits,
            self_renew,
            ids: Mutex::new(uuid::ContextV7::new()),
        }
    }
}

/// Rate limits as an event detail: `name=limit/window` (seconds), comma-
/// separated; empty for none.
pub(crate) fn describe_rate_limits(limits: &[latchkey_core::limit::RateLimit]) -> String {
    limits
        .iter()
        .map(|l| format!("{}={}/{}", l.name, l.limit, l.window.as_secs()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Credits as an event detail: the count, and `+amount/interval` (seconds)
/// for a refill; empty for unlimited.
pub(crate) fn describe_credits(credits: Option<&latchkey_core::limit::Credits>) -> String {
    credits.map_or_else(String::new, |c| match c.refill {
        Some(r) => format!("{}+{}/{}", c.remaining, r.amount, r.interval.as_secs()),
        None => c.remaining.to_string(),
    })
}
