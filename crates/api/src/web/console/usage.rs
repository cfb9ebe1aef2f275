//! A token's calls on its console page: a row per day, a column per
//! verdict given.

use crate::lifecycle::UsageDay;
use crate::verdict::Verdict;

/// Days the token page shows, counting today.
pub(super) const DAYS: u32 = 7;

pub(super) struct UsageTable {
    /// The verdicts given on any of the days, in the order they are judged.
    pub columns: Vec<&'static str>,
    /// (date, calls per column), the latest day first.
    pub rows: Vec<(String, Vec<u64>)>,
}

impl UsageTable {
    pub(super) fn new(days: &[UsageDay]) -> Self {
        let given: Vec<Verdict> = Verdict::ALL
            .into_iter()
            .filter(|v| days.iter().any(|d| d.counts.iter().any(|(c, _)| c == v)))
            .collect();
        UsageTable {
            columns: given.iter().map(|v| v.label()).collect(),
            rows: days
                .iter()
                .map(|d| {
                    let calls = given
                        .iter()
                        .map(|v| d.counts.iter().find(|(c, _)| c == v).map_or(0, |(_, n)| *n))
                        .collect();
                    (d.date(), calls)
                })
                .collect(),
        }
    }
}
