//! The audit trail: one [`Event`] per admin change, written in the same
//! transaction as the change, so there is never a change without its event nor
//! an event without its change (and EXPIRING warnings, written with the mark
//! that the warning was given). Events outlive the tokens they describe and
//! never hold a secret. The event log numbers them as they are appended
//! ([`EventEntry`]), for watchers.

use std::collections::BTreeMap;
use std::fmt;

use uuid::Uuid;

use crate::clock::Timestamp;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Updated,
    Revoked,
    Restored,
    Renewed,
    Deleted,
    OwnerDisabled,
    OwnerEnabled,
    /// An owner's rate limits were set.
    LimitsChanged,
    /// The token's credits in the database reached 0.
    CreditsExhausted,
    /// The token was found leaked (a secret scanner's report, or its holder
    /// through public revocation) and revoked.
    Leaked,
    /// The token expires within one of `notifications.expiry_warnings`
    /// (detail `lead`, `expire_time`): given once per token and lead time.
    Expiring,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Revoked,
        EventKind::Restored,
        EventKind::Renewed,
        EventKind::Deleted,
        EventKind::OwnerDisabled,
        EventKind::OwnerEnabled,
        EventKind::LimitsChanged,
        EventKind::CreditsExhausted,
        EventKind::Leaked,
        EventKind::Expiring,
    ];

    /// The name stored and shown: `CREATED`, `OWNER_DISABLED`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "CREATED",
            EventKind::Updated => "UPDATED",
            EventKind::Revoked => "REVOKED",
            EventKind::Restored => "RESTORED",
            EventKind::Renewed => "RENEWED",
            EventKind::Deleted => "DELETED",
            EventKind::OwnerDisabled => "OWNER_DISABLED",
            EventKind::OwnerEnabled => "OWNER_ENABLED",
            EventKind::LimitsChanged => "LIMITS_CHANGED",
            EventKind::CreditsExhausted => "CREDITS_EXHAUSTED",
            EventKind::Leaked => "LEAKED",
            EventKind::Expiring => "EXPIRING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// UUIDv7: events of one process sort in the order they were written.
    pub id: Uuid,
    pub time: Timestamp,
    pub kind: EventKind,
    /// `None` for owner events.
    pub token_id: Option<Uuid>,
    pub owner: String,
    /// `admin` (the static credential), `system` (latchkey itself), or the
    /// acting token's id.
    pub actor: String,
    /// What changed, as short strings (a reason, the fields updated, the
    /// renewal's new token id). Never a secret.
    pub detail: BTreeMap<String, String>,
}

/// An event's place in the event log: numbered as replicas append events,
/// with the event's owner, so that a watcher of one owner reads only its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventEntry {
    pub seq: i64,
    pub event_id: Uuid,
    pub owner: String,
}

impl crate::changes::Numbered for EventEntry {
    fn seq(&self) -> i64 {
        self.seq
    }
}

/// Which events ListTokenEvents wants; both `None`: every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub token_id: Option<Uuid>,
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("created"), None);
    }
}
