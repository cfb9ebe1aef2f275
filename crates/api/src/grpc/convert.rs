//! Conversions between proto messages and domain types. Conversions of input
//! validate it and name the offending field.

use std::time::Duration;

use uuid::Uuid;

use super::pb;
use crate::audit::{Event, EventKind};
use crate::client::Client;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::lifecycle::Expiry;
use crate::owner::{OwnerRecord, TokenCounts};
use crate::token::{Status, TokenRecord};
use crate::verifier::Verdict;
use latchkey_core::limit::{Credits, RateLimit, Refill};

/// Seconds from 0001-01-01 and to 9999-12-31, protobuf's Timestamp range.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

pub fn token(r: &TokenRecord, now: Timestamp) -> pb::Token {
    let mut token = pb::Token {
        status: status(r.status(now)) as i32,
        ..token_without_status(r)
    };
    // A refill period that began since the last take: its amount is left.
    if let (Some(c), Some(shown)) = (&r.credits, &mut token.credits) {
        shown.remaining = i64::try_from(c.remaining_at(now)).unwrap_or(i64::MAX);
    }
    token
}

/// Every field of the token but `status`, which depends on the time.
pub fn token_without_status(r: &TokenRecord) -> pb::Token {
    let (last_used_ip, last_used_user_agent) = Client::as_text(r.last_used_client.as_ref());
    pb::Token {
        id: r.id.to_string(),
        owner: r.owner.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        scopes: r.scopes.clone(),
        metadata: r.metadata.clone(),
        display_hint: r.display_hint.clone(),
        status: 0,
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        expire_time: r.expire_time.map(timestamp),
        idle_timeout: r.idle_timeout.map(duration),
        last_used_time: r.last_used_time.map(timestamp),
        revoke_time: r.revoke_time.map(timestamp),
        revoke_reason: r.revoke_reason.clone(),
        replaces: r.replaces.map(|u| u.to_string()).unwrap_or_default(),
        replaced_by: r.replaced_by.map(|u| u.to_string()).unwrap_or_default(),
        credits: r.credits.as_ref().map(credits),
        rate_limits: rate_limits(&r.rate_limits),
        last_used_ip,
        last_used_user_agent,
        recent_ips: r.recent_ips.iter().map(ToString::to_string).collect(),
    }
}

/// One day's calls that found a token.
pub fn usage_day(d: &crate::lifecycle::UsageDay) -> pb::TokenUsageDay {
    pb::TokenUsageDay {
        date: d.date(),
        counts: d
            .counts
            .iter()
            .map(|(v, n)| pb::VerdictCount {
                verdict: verdict(*v) as i32,
                count: i64::try_from(*n).unwrap_or(i64::MAX),
            })
            .collect(),
    }
}

/// Credits as stored: what is left for the period of the last take (the
/// refill's amount applies from the next period; see [`token`]).
pub fn credits(c: &Credits) -> pb::Credits {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::Credits {
        remaining: n(c.remaining),
        refill: c.refill.map(|r| pb::CreditsRefill {
            amount: n(r.amount),
            interval: Some(duration(r.interval)),
        }),
    }
}

/// Credits as given (checked by the lifecycle); `field` names them in
/// errors.
///
/// # Errors
/// A negative count or amount, or a refill without an interval.
pub fn credits_from(field: &str, c: &pb::Credits) -> Result<Credits, Error> {
    let count = |path: &str, v: i64| {
        u64::try_from(v)
            .map_err(|_| Error::invalid(format!("{field}.{path}"), "must not be negative"))
    };
    let refill = c
        .refill
        .as_ref()
        .map(|r| -> Result<Refill, Error> {
            let at = format!("{field}.refill.interval");
            let interval = r
                .interval
                .as_ref()
                .ok_or_else(|| Error::invalid(at.clone(), "required"))?;
            Ok(Refill {
                amount: count("refill.amount", r.amount)?,
                interval: positive_duration(&at, interval)?,
            })
        })
        .transpose()?;
    Ok(Credits {
        remaining: count("remaining", c.remaining)?,
        refill,
        period: 0,
        generation: 0,
    })
}

pub fn rate_limits(limits: &[RateLimit]) -> Vec<pb::RateLimit> {
    limits
        .iter()
        .map(|l| pb::RateLimit {
            name: l.name.clone(),
            limit: i64::try_from(l.limit).unwrap_or(i64::MAX),
            window: Some(duration(l.window)),
        })
        .collect()
}

/// Rate limits as given (checked by the lifecycle); `field` names them in
/// errors.
///
/// # Errors
/// A negative limit, or a window missing or out of range.
pub fn rate_limits_from(field: &str, limits: &[pb::RateLimit]) -> Result<Vec<RateLimit>, Error> {
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let window = l
                .window
                .as_ref()
                .ok_or_else(|| Error::invalid(format!("{field}[{i}].window"), "required"))?;
            Ok(RateLimit {
                name: l.name.clone(),
                limit: u64::try_from(l.limit).map_err(|_| {
                    Error::invalid(format!("{field}[{i}].limit"), "must not be negative")
                })?,
                window: positive_duration(&format!("{field}[{i}].window"), window)?,
            })
        })
        .collect()
}

pub fn owner(r: &OwnerRecord, counts: &TokenCounts) -> pb::Owner {
    let n = |c: u64| i64::try_from(c).unwrap_or(i64::MAX);
    pb::Owner {
        owner: r.owner.clone(),
        disabled: r.is_disabled(),
        disable_time: r.disable_time.map(timestamp),
        reason: r.reason.clone(),
        token_counts: Some(pb::TokenCounts {
            active: n(counts.active),
            revoked: n(counts.revoked),
            expired: n(counts.expired),
            inactive: n(counts.inactive),
        }),
        rate_limits: rate_limits(&r.rate_limits),
    }
}

pub fn event(e: &Event) -> pb::TokenEvent {
    let kind = match e.kind {
        EventKind::Created => pb::EventKind::Created,
        EventKind::Updated => pb::EventKind::Updated,
        EventKind::Revoked => pb::EventKind::Revoked,
        EventKind::Restored => pb::EventKind::Restored,
        EventKind::Renewed => pb::EventKind::Renewed,
        EventKind::Deleted => pb::EventKind::Deleted,
        EventKind::OwnerDisabled => pb::EventKind::OwnerDisabled,
        EventKind::OwnerEnabled => pb::EventKind::OwnerEnabled,
        EventKind::LimitsChanged => pb::EventKind::LimitsChanged,
        EventKind::CreditsExhausted => pb::EventKind::CreditsExhausted,
        EventKind::Leaked => pb::EventKind::Leaked,
        EventKind::Expiring => pb::EventKind::Expiring,
    };
    pb::TokenEvent {
        id: e.id.to_string(),
        kind: kind as i32,
        token_id: e.token_id.map(|u| u.to_string()).unwrap_or_default(),
        owner: e.owner.clone(),
        actor: e.actor.clone(),
        time: Some(timestamp(e.time)),
        detail: e.detail.clone(),
    }
}

/// The expiry oneof of CreateToken and RenewToken (two generated types of
/// the same shape).
#[derive(Clone, Copy, Debug)]
pub enum Expiration<'a> {
    Ttl(&'a prost_types::Duration),
    ExpireTime(&'a prost_types::Timestamp),
}

impl<'a> From<&'a pb::create_token_request::Expiration> for Expiration<'a> {
    fn from(e: &'a pb::create_token_request::Expiration) -> Self {
        use pb::create_token_request::Expiration as E;
        match e {
            E::Ttl(d) => Expiration::Ttl(d),
            E::ExpireTime(t) => Expiration::ExpireTime(t),
        }
    }
}

impl<'a> From<&'a pb::renew_token_request::Expiration> for Expiration<'a> {
    fn from(e: &'a pb::renew_token_request::Expiration) -> Self {
        use pb::renew_token_request::Expiration as E;
        match e {
            E::Ttl(d) => Expiration::Ttl(d),
            E::ExpireTime(t) => Expiration::ExpireTime(t),
        }
    }
}

/// # Errors
/// If the ttl is not positive or the expire_time is not a valid timestamp.
pub fn expiry(e: Option<Expiration<'_>>) -> Result<Option<Expiry>, Error> {
    Ok(match e {
        None => None,
        Some(Expiration::Ttl(d)) => Some(Expiry::After(positive_duration("ttl", d)?)),
        Some(Expiration::ExpireTime(t)) => Some(Expiry::At(timestamp_from("expire_time", t)?)),
    })
}

pub fn status(s: Status) -> pb::TokenStatus {
    match s {
        Status::Active => pb::TokenStatus::Active,
        Status::Revoked => pb::TokenStatus::Revoked,
        Status::Expired => pb::TokenStatus::Expired,
        Status::Inactive => pb::TokenStatus::Inactive,
    }
}

/// # Errors
/// If `value` is not a known status other than UNSPECIFIED.
pub fn status_from(field: &str, value: i32) -> Result<Status, Error> {
    match pb::TokenStatus::try_from(value) {
        Ok(pb::TokenStatus::Active) => Ok(Status::Active),
        Ok(pb::TokenStatus::Revoked) => Ok(Status::Revoked),
        Ok(pb::TokenStatus::Expired) => Ok(Status::Expired),
        Ok(pb::TokenStatus::Inactive) => Ok(Status::Inactive),
        Ok(pb::TokenStatus::Unspecified) | Err(_) => Err(Error::invalid(
            field,
            "must be TOKEN_STATUS_ACTIVE, _REVOKED, _EXPIRED or _INACTIVE",
        )),
    }
}

pub fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Valid => pb::Verdict::Valid,
        Verdict::Malformed => pb::Verdict::Malformed,
        Verdict::Unknown => pb::Verdict::Unknown,
        Verdict::Revoked => pb::Verdict::Revoked,
        Verdict::Expired => pb::Verdict::Expired,
        Verdict::OwnerDisabled => pb::Verdict::OwnerDisabled,
        Verdict::Inactive => pb::Verdict::Inactive,
        Verdict::InsufficientScope => pb::Verdict::InsufficientScope,
        Verdict::RateLimited => pb::Verdict::RateLimited,
        Verdict::UsageExceeded => pb::Verdict::UsageExceeded,
    }
}

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.to_unix();
    prost_types::Timestamp { seconds, nanos }
}

/// # Errors
/// If `t` is outside protobuf's Timestamp range or its nanos are out of range.
pub fn timestamp_from(field: &str, t: &prost_types::Timestamp) -> Result<Timestamp, Error> {
    let bad = || Error::invalid(field, "is not a valid timestamp");
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(bad());
    }
    Timestamp::from_unix(t.seconds, t.nanos).ok_or_else(bad)
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A duration that must be positive (at least a microsecond).
///
/// # Errors
/// If `d` is zero, negative, or malformed.
pub fn positive_duration(field: &str, d: &prost_types::Duration) -> Result<Duration, Error> {
    let d = non_negative(field, d, "must be positive")?;
    if d.as_micros() == 0 {
        return Err(Error::invalid(field, "must be positive"));
    }
    Ok(d)
}

/// A duration that may be zero but not negative.
///
/// # Errors
/// If `d` is negative or malformed.
pub fn non_negative_duration(field: &str, d: &prost_types::Duration) -> Result<Duration, Error> {
    non_negative(field, d, "must not be negative")
}

fn non_negative(field: &str, d: &prost_types::Duration, negative: &str) -> Result<Duration, Error> {
    // protobuf's Duration spans ±10,000 years.
    if !(-999_999_999..=999_999_999).contains(&d.nanos)
        || !(-315_576_000_000..=315_576_000_000).contains(&d.seconds)
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0)
    {
        return Err(Error::invalid(field, "is not a valid duration"));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(field, negative));
    }
    Ok(Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    ))
}

/// # Errors
/// If `s` is not a UUID.
pub fn id(field: &str, s: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(s).map_err(|_| Error::invalid(field, "must be a token id (a UUID)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_proto() {
        let t = Timestamp::from_micros(1_795_000_000_123_456);
        assert_eq!(timestamp_from("t", &timestamp(t)).unwrap(), t);
    }

    #[test]
    fn out_of_range_timestamps_and_durations_are_refused() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert!(timestamp_from("t", &ts(MAX_SECONDS + 1, 0)).is_err());
        assert!(timestamp_from("t", &ts(0, -1)).is_err());
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert!(positive_duration("ttl", &d(0, 0)).is_err());
        assert!(positive_duration("ttl", &d(-5, 0)).is_err());
        assert!(positive_duration("ttl", &d(0, 999)).is_err());
        assert!(positive_duration("ttl", &d(1, -1)).is_err());
        assert_eq!(
            positive_duration("ttl", &d(3600, 0)).unwrap(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(id("id", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").is_ok());
        let err = id("id", "42").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { field, .. } if field == "id"));
    }
}
