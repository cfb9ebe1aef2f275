//! Tokens as the domain knows them: the string format, the HMAC digest, scopes,
//! the stored record with its derived status, and the limits on each field.

pub mod digest;
pub mod format;
pub mod scope;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;

use uuid::Uuid;

use crate::clock::Timestamp;
pub use crate::field::FieldError;
use crate::limit::{Credits, RateLimit};

pub use digest::{Digest, KeyRing, TokenKey};
pub use format::{Prefix, Secret};

/// The scope that lets a token call TokenAdmin.
pub const ADMIN_SCOPE: &str = "latchkey:admin";
/// The scope that lets a token renew itself (TokenSelf/RenewSelf).
pub const SELF_RENEW_SCOPE: &str = "latchkey:self-renew";
/// The scope that lets a token call RFC 7662 introspection.
pub const INTROSPECT_SCOPE: &str = "latchkey:introspect";
/// The scope that lets a caller (kube-apiserver's webhook client) post
/// TokenReviews.
pub const TOKEN_REVIEW_SCOPE: &str = "latchkey:tokenreview";

/// Field limits, from the API contract.
pub mod limits {
    pub const MAX_OWNER_CHARS: usize = 256;
    pub const MAX_NAME_CHARS: usize = 128;
    pub const MAX_DESCRIPTION_CHARS: usize = 1024;
    pub const MAX_REASON_CHARS: usize = 1024;
    pub const MAX_SCOPES: usize = 64;
    pub use crate::limit::MAX_CREDITS;
    pub const MAX_METADATA_PAIRS: usize = 32;
    pub const MAX_METADATA_KEY_CHARS: usize = 64;
    pub const MAX_METADATA_VALUE_CHARS: usize = 1024;
}

/// A token's status, derived when read: revoked, else expired, else inactive,
/// else active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Active,
    Revoked,
    Expired,
    Inactive,
}

/// Everything stored about a token, except its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub display_hint: String,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub expire_time: Option<Timestamp>,
    pub idle_timeout: Option<Duration>,
    pub last_used_time: Option<Timestamp>,
    pub revoke_time: Option<Timestamp>,
    pub revoke_reason: String,
    pub replaces: Option<Uuid>,
    pub replaced_by: Option<Uuid>,
    /// When RestoreToken last restarted the idle clock; `None`: it runs
    /// from creation.
    pub idle_reset_time: Option<Timestamp>,
    /// Issued by `replaces` renewing itself (TokenSelf/RenewSelf): a link
    /// reuse detection follows. False for an admin renewal, and cleared by
    /// RestoreToken, either of which starts a new chain.
    pub self_renewed: bool,
    /// Usage credits; `None`: unlimited use.
    pub credits: Option<Credits>,
    /// The token's own rate limits (its owner's apply too).
    pub rate_limits: Vec<RateLimit>,
    /// Where the last use with client details came from.
    pub last_used_client: Option<crate::client::Client>,
    /// The last [`crate::client::RECENT_IPS`] distinct addresses it was used
    /// from, the latest first.
    pub recent_ips: Vec<std::net::IpAddr>,
}

impl TokenRecord {
    /// A token as created at `now`: no name, description, scopes, metadata
    /// or display hint, no expiry or idle timeout, never used, revoked or
    /// renewed. Callers set what they have with struct update syntax.
    pub fn new(id: Uuid, owner: String, now: Timestamp) -> Self {
        TokenRecord {
            id,
            owner,
            name: String::new(),
            description: String::new(),
            scopes: Vec::new(),
            metadata: BTreeMap::new(),
            display_hint: String::new(),
            create_time: now,
            update_time: now,
            expire_time: None,
            idle_timeout: None,
            last_used_time: None,
            revoke_time: None,
            revoke_reason: String::new(),
            replaces: None,
            replaced_by: None,
            idle_reset_time: None,
            self_renewed: false,
            credits: None,
            rate_limits: Vec::new(),
            last_used_client: None,
            recent_ips: Vec::new(),
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoke_time.is_some()
    }

    /// Expired at `now`: an expiry at exactly `now` has passed.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expire_time.is_some_and(|t| t <= now)
    }

    /// The status at `now`, judged from what is stored.
    pub fn status(&self, now: Timestamp) -> Status {
        self.status_with_use(now, None)
    }

    /// The status at `now`, counting also a use not yet written to the
    /// database (Verify knows of those before the flusher writes them).
    pub fn status_with_use(&self, now: Timestamp, unwritten_use: Option<Timestamp>) -> Status {
        self.lifetime().status(now, unwritten_use)
    }

    /// When the token becomes inactive unless used before: see
    /// [`Lifetime::inactive_time`].
    pub fn inactive_time(&self, unwritten_use: Option<Timestamp>) -> Option<Timestamp> {
        self.lifetime().inactive_time(unwritten_use)
    }

    /// The part of the record its status depends on.
    pub fn lifetime(&self) -> Lifetime {
        let idle_since = [self.last_used_time, self.idle_reset_time]
            .into_iter()
            .flatten()
            .fold(self.create_time, Timestamp::max);
        Lifetime {
            expires: self.expire_time.unwrap_or(Timestamp::MAX),
            // Timestamps count microseconds; a shorter timeout is one.
            idle_timeout_micros: self.idle_timeout.map(|d| {
                NonZeroU64::new(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                    .unwrap_or(NonZeroU64::MIN)
            }),
            idle_since,
            revoked: self.is_revoked(),
        }
    }
}

/// What a token's status depends on, and nothing else: the small part of a
/// record that Verify judges from, kept compact because every cached token
/// holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// `Timestamp::MAX` for a token without an expiry.
    expires: Timestamp,
    idle_timeout_micros: Option<NonZeroU64>,
    /// The latest of creation, last use and idle-clock restart.
    idle_since: Timestamp,
    revoked: bool,
}

impl Lifetime {
    /// Revoked, else expired (an expiry at exactly `now` has passed), else
    /// inactive, else active; `unwritten_use` counts as a use.
    pub fn status(&self, now: Timestamp, unwritten_use: Option<Timestamp>) -> Status {
        if self.revoked {
            Status::Revoked
        } else if self.expires <= now {
            Status::Expired
        } else if self.inactive_time(unwritten_use).is_some_and(|t| t <= now) {
            Status::Inactive
        } else {
            Status::Active
        }
    }

    /// When the token expires; `None` if never.
    pub fn expire_time(&self) -> Option<Timestamp> {
        (self.expires != Timestamp::MAX).then_some(self.expires)
    }

    /// When the token becomes inactive unless used before: `idle_timeout`
    /// after the latest of creation, last use and idle-clock restart. `None`
    /// without an idle timeout.
    pub fn inactive_time(&self, unwritten_use: Option<Timestamp>) -> Option<Timestamp> {
        let timeout = Duration::from_micros(self.idle_timeout_micros?.get());
        let since = unwritten_use.map_or(self.idle_since, |u| u.max(self.idle_since));
        Some(since.checked_add(timeout).unwrap_or(Timestamp::MAX))
    }
}

/// What a text field may hold besides printable characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    /// A one-line identifier or label (owners, names, metadata keys): no
    /// control characters at all.
    Line,
    /// Free text (descriptions, reasons, metadata values): tab allowed,
    /// no other control character.
    Prose,
}

/// Checks `value` is at most `max` characters (Unicode scalar values) and
/// holds no C0 or C1 control character (a tab in [`Text::Prose`] aside):
/// such text would forge log lines, break out of HTTP headers, or (NUL) be
/// refused by PostgreSQL.
///
/// # Errors
/// Names `field` if it is longer, or holds a control character.
pub fn check_text(field: &str, value: &str, max: usize, kind: Text) -> Result<(), FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let allowed = |c: char| kind == Text::Prose && c == '\t';
    if let Some(c) = value.chars().find(|c| c.is_control() && !allowed(*c)) {
        let what = match kind {
            Text::Line => "control characters",
            Text::Prose => "control characters other than tab",
        };
        return Err(FieldError::new(
            field,
            format!("must not contain {what} (found U+{:04X})", u32::from(c)),
        ));
    }
    Ok(())
}

/// # Errors
/// If the owner is empty, longer than [`limits::MAX_OWNER_CHARS`], or holds
/// a control character.
pub fn check_owner(field: &str, owner: &str) -> Result<(), FieldError> {
    if owner.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    check_text(field, owner, limits::MAX_OWNER_CHARS, Text::Line)
}

/// # Errors
/// If there are too many scopes or one is not a valid scope; the error names
/// the offending element (`scopes[3]`).
pub fn check_scopes<S: AsRef<str>>(field: &str, scopes: &[S]) -> Result<(), FieldError> {
    if scopes.len() > limits::MAX_SCOPES {
        return Err(FieldError::new(
            field,
            format!("at most {} scopes", limits::MAX_SCOPES),
        ));
    }
    for (i, s) in scopes.iter().enumerate() {
        scope::validate(s.as_ref()).map_err(|why| FieldError::new(format!("{field}[{i}]"), why))?;
    }
    Ok(())
}

/// # Errors
/// If there are too many pairs, or a key or value is too long, a key empty,
/// or either holds a control character; the error names the key
/// (`metadata["team"]`).
pub fn check_metadata(field: &str, metadata: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if metadata.len() > limits::MAX_METADATA_PAIRS {
        return Err(FieldError::new(
            field,
            format!("at most {} pairs", limits::MAX_METADATA_PAIRS),
        ));
    }
    for (k, v) in metadata {
        let key_field = || format!("{field}[{k:?}]");
        if k.is_empty() {
            return Err(FieldError::new(field, "keys must not be empty"));
        }
        check_text(&key_field(), k, limits::MAX_METADATA_KEY_CHARS, Text::Line)
            .map_err(|e| FieldError::new(e.field, format!("keys {}", e.reason)))?;
        check_text(
            &key_field(),
            v,
            limits::MAX_METADATA_VALUE_CHARS,
            Text::Prose,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        TokenRecord::new(Uuid::nil(), "u".into(), Timestamp::EPOCH)
    }

    #[test]
    fn revoked_wins_over_expired_and_expiry_is_inclusive() {
        let now = Timestamp::from_micros(1_000);
        let mut t = record();
        assert_eq!(t.status(now), Status::Active);
        t.expire_time = Some(now);
        assert_eq!(t.status(now), Status::Expired);
        t.revoke_time = Some(Timestamp::EPOCH);
        assert_eq!(t.status(now), Status::Revoked);
    }

    #[test]
    fn idleness_runs_from_the_latest_of_creation_use_and_restore() {
        let day = Duration::from_secs(86_400);
        let at = |days: i64| Timestamp::from_micros(days * 86_400_000_000);
        let mut t = record();
        t.idle_timeout = Some(30 * day);
        assert_eq!(t.status(at(29)), Status::Active);
        assert_eq!(t.status(at(30)), Status::Inactive);
        t.last_used_time = Some(at(10));
        assert_eq!(t.status(at(39)), Status::Active);
        assert_eq!(t.status(at(40)), Status::Inactive);
        assert_eq!(t.status_with_use(at(40), Some(at(20))), Status::Active);
        t.idle_reset_time = Some(at(45));
        assert_eq!(t.status(at(74)), Status::Active);
        t.expire_time = Some(at(50));
        assert_eq!(t.status(at(80)), Status::Expired);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(check_text("name", &"é".repeat(128), 128, Text::Line).is_ok());
        let err = check_text("name", &"é".repeat(129), 128, Text::Line).unwrap_err();
        assert_eq!(err.field, "name");
    }

    #[test]
    fn control_characters_are_refused_and_tab_only_in_prose() {
        for bad in [
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{1b}[31mb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9b}b",
        ] {
            for kind in [Text::Line, Text::Prose] {
                let err = check_text("owner", bad, 64, kind).unwrap_err();
                assert_eq!(err.field, "owner");
                assert!(err.reason.contains("control characters"), "{err:?}");
            }
        }
        assert!(check_text("description", "a\tb", 64, Text::Prose).is_ok());
        assert!(check_text("name", "a\tb", 64, Text::Line).is_err());
        assert!(check_text("name", "naïve ✓ 名前", 64, Text::Line).is_ok());
        let md = BTreeMap::from([("te\nam".to_owned(), "x".to_owned())]);
        let err = check_metadata("metadata", &md).unwrap_err();
        assert!(err.reason.starts_with("keys must not"), "{err:?}");
        let md = BTreeMap::from([("team".to_owned(), "x\r\ny".to_owned())]);
        assert_eq!(
            check_metadata("metadata", &md).unwrap_err().field,
            "metadata[\"team\"]"
        );
    }

    #[test]
    fn scope_and_metadata_errors_name_the_element() {
        let scopes = vec!["ok".to_owned(), "not ok".to_owned()];
        assert_eq!(
            check_scopes("scopes", &scopes).unwrap_err().field,
            "scopes[1]"
        );
        let md = BTreeMap::from([("team".to_owned(), "x".repeat(1025))]);
        assert_eq!(
            check_metadata("metadata", &md).unwrap_err().field,
            "metadata[\"team\"]"
        );
    }
}
