//! Usage limits on a token: named rate limits (a number of calls per
//! window, on the token or shared by all of its owner's tokens) and usage
//! credits. What they are and how time divides into their windows; the
//! spending is the service's.

use std::time::Duration;

use crate::clock::Timestamp;

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

/// Checks a set of rate limits for `field`: at most [`MAX_RATE_LIMITS`],
/// names well-formed and unique, limits between 1 and [`MAX_RATE`],
/// windows whole seconds between [`MIN_WINDOW`] and [`MAX_WINDOW`].
/// Returns the field path and what is wrong.
///
/// # Errors
/// `(path, reason)` for the first fault found.
pub fn check_rate_limits(field: &str, limits: &[RateLimit]) -> Result<(), (String, String)> {
    if limits.len() > MAX_RATE_LIMITS {
        return Err((
            field.to_owned(),
            format!("at most {MAX_RATE_LIMITS} rate limits"),
        ));
    }
    for (i, l) in limits.iter().enumerate() {
        let at = |part: &str| format!("{field}[{i}].{part}");
        if l.name.is_empty() || l.name.chars().count() > MAX_RATE_LIMIT_NAME_CHARS {
            return Err((
                at("name"),
                format!("must be 1 to {MAX_RATE_LIMIT_NAME_CHARS} characters"),
            ));
        }
        if !l
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                at("name"),
                "may hold only letters, digits, '-', '_' and '.'".to_owned(),
            ));
        }
        if limits[..i].iter().any(|other| other.name == l.name) {
            return Err((at("name"), format!("{:?} is named twice", l.name)));
        }
        if l.limit == 0 || l.limit > MAX_RATE {
            return Err((at("limit"), format!("must be between 1 and {MAX_RATE}")));
        }
        if l.window < MIN_WINDOW || l.window > MAX_WINDOW || l.window.subsec_nanos() != 0 {
            return Err((
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
            let (got, _) = check_rate_limits("limits", &limits).unwrap_err();
            assert_eq!(got, path);
        }
        let mut fraction = limit("a", 1, 1);
        fraction.window = Duration::from_millis(1500);
        assert!(check_rate_limits("limits", &[fraction]).is_err());
        assert!(check_rate_limits("limits", &[limit("per-second", 50, 1)]).is_ok());
    }
}
