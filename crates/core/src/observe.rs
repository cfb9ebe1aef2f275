//! What the request path reports as it works (verdicts, cache hits and
//! misses, lookups, calls), to whoever counts: the binary's Prometheus
//! metrics implement [`Observe`]; tests and offline tools use [`Unobserved`].
//! Each report is a call through a trait object, so the code that reports
//! depends on no metrics library.

use std::time::Duration;

use crate::verdict::Verdict;

/// Which API answered a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Verify = 0,
    Check = 1,
    Introspect = 2,
    TokenReview = 3,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Verify, Api::Check, Api::Introspect, Api::TokenReview];

    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Api::Verify => "verify",
            Api::Check => "check",
            Api::Introspect => "introspect",
            Api::TokenReview => "tokenreview",
        }
    }
}

/// Receives the request path's reports. Every method does nothing by
/// default.
pub trait Observe: Send + Sync + 'static {
    /// `api` answered `verdict`.
    fn verdict(&self, api: Api, verdict: Verdict) {
        let _ = (api, verdict);
    }
    /// Verify answered from the cache.
    fn cache_hit(&self) {}
    /// Verify had to read the database.
    fn cache_miss(&self) {}
    /// A cache miss's lookup took `took`, and failed or not.
    fn lookup(&self, took: Duration, failed: bool) {
        let _ = (took, failed);
    }
    /// A cache miss was refused without a lookup (the lookup bound).
    fn lookup_refused(&self) {}
    /// A gRPC call to `path` took `took`; `known` says the server has such a
    /// method.
    fn call(&self, path: &str, known: bool, took: Duration) {
        let _ = (path, known, took);
    }
}

/// Reports to no one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl Observe for Unobserved {}
