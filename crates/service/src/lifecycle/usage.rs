//! How often a token was presented: per day and verdict, as the flushers
//! of every replica counted it.

use uuid::Uuid;

use super::Lifecycle;
use crate::error::Error;
use crate::token::FieldError;
use crate::verdict::Verdict;

/// The longest span GetTokenUsage covers, in days (today counts).
pub const MAX_USAGE_DAYS: u32 = 90;
/// The span when none is asked for.
pub const DEFAULT_USAGE_DAYS: u32 = 30;

/// One day's calls that found a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDay {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Calls per verdict, each verdict given that day once.
    pub counts: Vec<(Verdict, u64)>,
}

impl UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub fn date(&self) -> String {
        let midnight = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(
                u64::try_from(self.day).unwrap_or(0).saturating_mul(86_400),
            );
        let mut date = humantime::format_rfc3339_seconds(midnight).to_string();
        date.truncate(10);
        date
    }
}

impl Lifecycle {
    /// Token `id`'s calls over the last `days` days (0: the default), the
    /// latest day first; days without calls are left out.
    ///
    /// # Errors
    /// `InvalidArgument` naming `days` past [`MAX_USAGE_DAYS`]; `NotFound`;
    /// store faults.
    pub async fn usage(&self, id: Uuid, days: u32) -> Result<Vec<UsageDay>, Error> {
        let days = match days {
            0 => DEFAULT_USAGE_DAYS,
            1..=MAX_USAGE_DAYS => days,
            _ => {
                return Err(FieldError::new("days", format!("from 1 to {MAX_USAGE_DAYS}")).into());
            }
        };
        self.get(id).await?;
        let today = self.clock.now().as_micros().div_euclid(86_400_000_000);
        let rows = self
            .store
            .token_usage(id, today - i64::from(days) + 1)
            .await?;
        let mut out: Vec<UsageDay> = Vec::new();
        for (day, label, count) in rows {
            let Some(verdict) = Verdict::ALL.into_iter().find(|v| v.label() == label) else {
                continue;
            };
            let count = u64::try_from(count).unwrap_or(0);
            match out.last_mut() {
                Some(last) if last.day == day => last.counts.push((verdict, count)),
                _ => out.push(UsageDay {
                    day,
                    counts: vec![(verdict, count)],
                }),
            }
        }
        Ok(out)
    }
}
