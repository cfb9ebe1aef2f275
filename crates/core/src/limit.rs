//! Usage limits on a token: named rate limits (a number of calls per
//! window, on the token or shared by all of its owner's tokens) and usage
//! credits. What they are and how time divides into their windows; the
//! spending is the service's.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::field::FieldError;

/// The most usage credits a token may be given (and a refill's amount).
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;
/// The most rate limits a token, or an owner, may have.
pub const MAX_RATE_LIMITS: usize = 8;
/// The longest rate-limit name.
pub const MAX_RATE_LIMIT_NAME_CHARS: usize = 64;
/// The shortest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);
/// The most calls a rate limit may allow per window.
pub const MAX_RATE: u64 = 1_000_000_000_000;

/// The shortest refill interval.
pub const MIN_REFILL_INTERVAL: Duration = Duration::from_secs(60);
/// The longest refill interval.
pub const MAX_REFILL_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A token's usage credits: every VALID answer spends the call's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credits {
    /// Left in the database, for `period` (replicas may hold a few more).
    pub remaining: u64,
    pub refill: Option<Refill>,
    /// The refill period `remaining` belongs to (0 without refills).
    pub period: i64,
    /// Counts how often the credits were set anew (UpdateToken): a
    /// replica drops what it holds of an older generation.
    pub generation: i64,
}

/// At the start of every `interval` (aligned to the Unix epoch: a daily
/// refill at midnight UTC), the credits are set to `amount`; what was left
/// does not carry over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refill {
    pub amount: u64,
    pub interval: Duration,
}

impl Credits {
    /// Credits of a token created or updated at `now`.
    pub fn new(remaining: u64, refill: Option<Refill>, now: Timestamp, generation: i64) -> Self {
        let mut credits = Credits {
            remaining,
            refill,
            period: 0,
            generation,
        };
        credits.period = credits.period_at(now);
        credits
    }

    /// What a renewal's replacement starts with at `now`: what is left
    /// then, under the same refill.
    pub fn carried_over(&self, now: Timestamp) -> Credits {
        Credits::new(self.remaining_at(now), self.refill, now, 0)
    }

    /// The refill period that holds `at` (0 without refills).
    pub fn period_at(&self, at: Timestamp) -> i64 {
        self.refill.map_or(0, |r| {
            let secs = i64::try_from(r.interval.as_secs())
                .unwrap_or(i64::MAX)
                .max(1);
            at.as_micros().div_euclid(1_000_000) / secs
        })
    }

    /// What is left at `at`: `remaining`, or the refill's amount once a
    /// new period has begun.
    pub fn remaining_at(&self, at: Timestamp) -> u64 {
        match self.refill {
            Some(r) if self.period_at(at) > self.period => r.amount,
            _ => self.remaining,
        }
    }

    /// When the next refill comes, if any.
    pub fn next_refill(&self, at: Timestamp) -> Option<Timestamp> {
        self.refill.map(|r| {
            let secs = i64::try_from(r.interval.as_secs())
                .unwrap_or(i64::MAX)
                .max(1);
            Timestamp::from_micros(
                (self.period_at(at) + 1)
                    .saturating_mul(secs)
                    .saturating_mul(1_000_000),
            )
        })
    }

    /// What a replica's share of the credits belongs to at `at`: the
    /// generation and the period, in one number that only grows.
    pub fn epoch_at(&self, at: Timestamp) -> i64 {
        (self.generation << 32) | (self.period_at(at) & 0xFFFF_FFFF)
    }
}

/// Checks credits given for `field`.
///
/// # Errors
/// The path of the first fault found, and what is wrong.
pub fn check_credits(
    field: &str,
    remaining: u64,
    refill: Option<Refill>,
) -> Result<(), FieldError> {
    if remaining > MAX_CREDITS {
        return Err(FieldError::new(
            format!("{field}.remaining"),
            format!("from 0 to {MAX_CREDITS}"),
        ));
    }
    if let Some(r) = refill {
        if r.amount > MAX_CREDITS {
            return Err(FieldError::new(
                format!("{field}.refill.amount"),
                format!("from 0 to {MAX_CREDITS}"),
            ));
        }
        if r.interval < MIN_REFILL_INTERVAL
            || r.interval > MAX_REFILL_INTERVAL
            || r.interval.subsec_nanos() != 0
        {
            return Err(FieldError::new(
                format!("{field}.refill.interval"),
                "must be whole seconds, from 1 minute to 366 days".to_owned(),
            ));
        }
    }
    Ok(())
}

/// At most `limit` VALID answers per `window`. Windows are fixed and
/// aligned to the Unix epoch: a 1-second window starts on every whole
/// second, a 1-day window at midnight UTC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Names the limit in answers and headers: letters, digits, `-`, `_`,
    /// `.` (unique on its token or owner).
    pub name: String,
    pub limit: u64,
    pub window: Duration,
}

impl RateLimit {
    /// The window that holds `at`: its index since the epoch, and when it
    /// ends.
    pub fn window_at(&self, at: Timestamp) -> Window {
        let length = i64::try_from(self.window.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let index = at.as_micros().div_euclid(length);
        Window {
            index,
            end: Timestamp::from_micros(index.saturating_add(1).saturating_mul(length)),
        }
    }
}

/// One window of a rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Windows since the Unix epoch.
    pub index: i64,
    pub end: Timestamp,
}

impl Window {
    /// How long after `at` the window ends (zero if it has).
    pub fn left_after(&self, at: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.end.as_micros() - at.as_micros()).unwrap_or(0))
    }
}

/// A rate limit as the CLI and the console write it: `NAME=LIMIT/WINDOW`,
/// such as `per-second=50/1s` (the window as humantime reads it: `1s`,
/// `1m`, `1h`, `1d`). Checked later, by [`check_rate_limits`].
///
/// # Errors
/// What does not read, and how to write it.
pub fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let usage = "expected NAME=LIMIT/WINDOW, such as per-second=50/1s";
    let (name, rest) = text.split_once('=').ok_or(usage)?;
    let (limit, window) = rest.split_once('/').ok_or(usage)?;
    Ok(RateLimit {
        name: name.trim().to_owned(),
        limit: count(limit, usage)?,
        window: span(window)?,
    })
}

/// A refill as the CLI and the console write it: `AMOUNT/INTERVAL`, such
/// as `1000/1d`. Checked later, by [`check_credits`].
///
/// # Errors
/// What does not read, and how to write it.
pub fn parse_refill(text: &str) -> Result<Refill, String> {
    let usage = "expected AMOUNT/INTERVAL, such as 1000/1d";
    let (amount, interval) = text.split_once('/').ok_or(usage)?;
    Ok(Refill {
        amount: count(amount, usage)?,
        interval: span(interval)?,
    })
}

fn count(text: &str, usage: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a number ({usage})", text.trim()))
}

fn span(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        format!(
            "{:?} is not a duration such as 1s, 1m, 1h or 1d",
            text.trim()
        )
    })
}

/// Checks a set of rate limits for `field`: at most [`MAX_RATE_LIMITS`],
/// names well-formed and unique, limits between 1 and [`MAX_RATE`],
/// windows whole seconds between [`MIN_WINDOW`] and [`MAX_WINDOW`].
///
/// # Errors
/// The path of the first fault found, and what is wrong.
pub fn check_rate_limits(field: &str, limits: &[RateLimit]) -> Result<(), FieldError> {
    if limits.len() > MAX_RATE_LIMITS {
        return Err(FieldError::new(
            field.to_owned(),
            format!("at most {MAX_RATE_LIMITS} rate limits"),
        ));
    }
    for (i, l) in limits.iter().enumerate() {
        let at = |part: &str| format!("{field}[{i}].{part}");
        if l.name.is_empty() || l.name.chars().count() > MAX_RATE_LIMIT_NAME_CHARS {
            return Err(FieldError::new(
                at("name"),
                format!("must be 1 to {MAX_RATE_LIMIT_NAME_CHARS} characters"),
            ));
        }
        if !l
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(FieldError::new(
                at("name"),
                "may hold only letters, digits, '-', '_' and '.'".to_owned(),
            ));
        }
        if limits[..i].iter().any(|other| other.name == l.name) {
            return Err(FieldError::new(
                at("name"),
                format!("{:?} is named twice", l.name),
            ));
        }
        if l.limit == 0 || l.limit > MAX_RATE {
            return Err(FieldError::new(
                at("limit"),
                format!("must be between 1 and {MAX_RATE}"),
            ));
        }
        if l.window < MIN_WINDOW || l.window > MAX_WINDOW || l.window.subsec_nanos() != 0 {
            return Err(FieldError::new(
                at("window"),
                "must be whole seconds, from 1 second to 31 days".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u64, secs: u64) -> RateLimit {
        RateLimit {
            name: name.to_owned(),
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn credits_refill_at_each_period_and_only_grow_their_epoch() {
        let day = Duration::from_secs(86_400);
        let at = |secs: i64| Timestamp::from_micros(secs * 1_000_000);
        let refill = Some(Refill {
            amount: 100,
            interval: day,
        });
        let credits = Credits::new(30, refill, at(86_400 * 10 + 5), 2);
        assert_eq!(credits.period, 10);
        assert_eq!(credits.remaining_at(at(86_400 * 11 - 1)), 30);
        assert_eq!(credits.remaining_at(at(86_400 * 11)), 100);
        assert_eq!(
            credits.next_refill(at(86_400 * 10 + 5)),
            Some(at(86_400 * 11))
        );
        assert!(credits.epoch_at(at(86_400 * 11)) > credits.epoch_at(at(86_400 * 10)));
        let renewed = Credits {
            generation: 3,
            ..credits
        };
        assert!(renewed.epoch_at(at(0)) > credits.epoch_at(at(86_400 * 1000)));
        let plain = Credits::new(5, None, at(123), 0);
        assert_eq!((plain.period, plain.remaining_at(at(1 << 40))), (0, 5));
        assert!(
            check_credits(
                "credits",
                1,
                Some(Refill {
                    amount: 1,
                    interval: Duration::from_secs(59)
                })
            )
            .is_err()
        );
    }

    #[test]
    fn limits_read_as_the_cli_and_console_write_them() {
        assert_eq!(
            parse_rate_limit("per-second=50/1s"),
            Ok(limit("per-second", 50, 1))
        );
        assert_eq!(
            parse_rate_limit(" day = 7 / 1d "),
            Ok(limit("day", 7, 86_400))
        );
        for bad in ["per-second", "a=5", "a=x/1s", "a=-5/1s", "a=5/soon"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_refill("1000/1d"),
            Ok(Refill {
                amount: 1000,
                interval: Duration::from_secs(86_400)
            })
        );
        assert!(parse_refill("10").is_err() && parse_refill("x/1d").is_err());
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let l = limit("per-minute", 10, 60);
        let w = l.window_at(Timestamp::from_micros(61_500_000));
        assert_eq!(w.index, 1);
        assert_eq!(w.end, Timestamp::from_micros(120_000_000));
        let w = l.window_at(Timestamp::from_micros(119_999_999));
        assert_eq!(w.index, 1);
    }

    #[test]
    fn faults_name_the_field() {
        let bad = [
            (vec![limit("", 1, 1)], "limits[0].name"),
            (vec![limit("a b", 1, 1)], "limits[0].name"),
            (vec![limit("a", 1, 1), limit("a", 2, 1)], "limits[1].name"),
            (vec![limit("a", 0, 1)], "limits[0].limit"),
            (vec![limit("a", MAX_RATE + 1, 1)], "limits[0].limit"),
            (vec![limit("a", 1, 0)], "limits[0].window"),
            (vec![limit("a", 1, 32 * 86_400)], "limits[0].window"),
            (vec![limit("a", 1, 1); 9], "limits"),
        ];
        for (limits, path) in bad {
            let got = check_rate_limits("limits", &limits).unwrap_err();
            assert_eq!(got.field, path);
        }
        let mut fraction = limit("a", 1, 1);
        fraction.window = Duration::from_millis(1500);
        assert!(check_rate_limits("limits", &[fraction]).is_err());
        assert!(check_rate_limits("limits", &[limit("per-second", 50, 1)]).is_ok());
    }
}
