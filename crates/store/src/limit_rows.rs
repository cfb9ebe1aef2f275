//! How limits are stored: rate limits as JSON text (`tokens.rate_limits`,
//! `owners.rate_limits`), credits in their columns, and how much of a
//! count a replica takes at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entity::tokens;
use latchkey_core::limit::{Credits, RateLimit, Refill};

/// The most a replica takes at once however busy the token is.
pub const MAX_CREDIT_BLOCK: u64 = 1_000_000;

/// How many to take of `remaining` when `need` are needed and the replica
/// would like `want` (at most `remaining`): a sixteenth, so that replicas
/// share the last ones, at least `need`, at most `want` (itself at most
/// [`MAX_CREDIT_BLOCK`]) unless `need` is more.
pub(crate) fn block(remaining: u64, need: u64, want: u64) -> u64 {
    let most = Ord::max(Ord::min(want, MAX_CREDIT_BLOCK), need);
    Ord::min((remaining / 16).clamp(need, most), remaining)
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    limit: u64,
    /// Seconds.
    window: u64,
}

/// The stored form of `limits`: empty for none.
pub(crate) fn encode(limits: &[RateLimit]) -> String {
    if limits.is_empty() {
        return String::new();
    }
    let stored: Vec<Stored> = limits
        .iter()
        .map(|l| Stored {
            name: l.name.clone(),
            limit: l.limit,
            window: l.window.as_secs(),
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_default()
}

/// Reads what [`encode`] wrote.
pub(crate) fn decode(text: &str) -> anyhow::Result<Vec<RateLimit>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let stored: Vec<Stored> = serde_json::from_str(text)?;
    Ok(stored
        .into_iter()
        .map(|s| RateLimit {
            name: s.name,
            limit: s.limit,
            window: Duration::from_secs(s.window),
        })
        .collect())
}

/// A count as stored (BIGINT), saturating.
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The stored form of credits: remaining, refill amount and refill
/// interval (seconds), each NULL where there is none, and the period (0
/// for none).
pub(crate) fn credit_columns(
    credits: Option<&Credits>,
) -> (Option<i64>, Option<i64>, Option<i64>, i64) {
    match credits {
        None => (None, None, None, 0),
        Some(c) => (
            Some(as_i64(c.remaining)),
            c.refill.map(|r| as_i64(r.amount)),
            c.refill.map(|r| as_i64(r.interval.as_secs())),
            c.period,
        ),
    }
}

/// A row's credits; `None`: unlimited.
pub(crate) fn credits_of(m: &tokens::Model) -> Option<Credits> {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let remaining = m.credits_remaining?;
    Some(Credits {
        remaining: n(remaining),
        refill: m
            .credits_refill_amount
            .zip(m.credits_refill_interval)
            .map(|(amount, interval)| Refill {
                amount: n(amount),
                interval: Duration::from_secs(n(interval)),
            }),
        period: m.credits_period,
        generation: m.credits_generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_back_as_written() {
        let limits = vec![
            RateLimit {
                name: "per-second".to_owned(),
                limit: 50,
                window: Duration::from_secs(1),
            },
            RateLimit {
                name: "per-day".to_owned(),
                limit: 100_000,
                window: Duration::from_secs(86_400),
            },
        ];
        assert_eq!(decode(&encode(&limits)).unwrap(), limits);
        assert_eq!(encode(&[]), "");
        assert!(decode("").unwrap().is_empty());
        assert!(decode("[{").is_err());
    }
}
