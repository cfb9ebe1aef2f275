//! What the operator sets for the lifecycle: the policy on lifetimes, the
//! limits on creation, how self-renewal retries are judged, and the key and
//! prefix tokens are minted with.

use std::time::Duration;

use serde::Deserialize;

use crate::token::{Prefix, TokenKey};

/// Owner of the admin tokens `latchkey admin-token issue` makes.
pub const ADMIN_OWNER: &str = "latchkey";

/// The window of the per-owner creation rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Rules set by the operator (configuration section `policy`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Longest lifetime a token may be given; `None`: no limit.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
    /// Idle timeout of tokens created without one; `None`: no idle expiry.
    #[serde(with = "humantime_serde")]
    pub default_idle_timeout: Option<Duration>,
    /// Longest grace period a token may give its old secret when it renews
    /// itself (TokenSelf/RenewSelf); admins are not bound by it.
    #[serde(with = "humantime_serde")]
    pub max_self_renew_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_ttl: None,
            default_idle_timeout: None,
            max_self_renew_grace: Duration::from_secs(3600),
        }
    }
}

/// Self-renewal (configuration section `self_renew`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfRenew {
    /// A RenewSelf whose answer was lost may be sent again with the old
    /// secret within this window, as long as the new secret was never
    /// used: it gets a fresh replacement (the unused one is revoked)
    /// instead of counting as reuse. Zero turns retries off.
    #[serde(with = "humantime_serde")]
    pub retry_window: Duration,
}

impl Default for SelfRenew {
    fn default() -> Self {
        SelfRenew {
            retry_window: Duration::from_secs(30),
        }
    }
}

/// Creation limits per owner (configuration section `limits`); 0 turns one
/// off. Both hold across every replica sharing the database.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// New tokens (renewals included) in any [`RATE_WINDOW`].
    pub create_per_owner_per_minute: u32,
    /// ACTIVE tokens held, counting those still in a renewal's grace period.
    pub max_active_tokens_per_owner: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            create_per_owner_per_minute: 10,
            max_active_tokens_per_owner: 100,
        }
    }
}

/// How a [`super::Lifecycle`] mints and judges tokens, set once from
/// configuration.
pub struct Settings {
    /// The key new tokens' digests are made with.
    pub key: TokenKey,
    /// The prefix of new tokens' secrets.
    pub prefix: Prefix,
    pub policy: Policy,
    pub limits: Limits,
    pub self_renew: SelfRenew,
}
