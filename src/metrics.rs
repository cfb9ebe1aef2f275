//! Prometheus metrics, served as text on `LATCHKEY_METRICS_ADDR` (`/metrics`).
//!
//! One registry per application (tests run several in one process). Every
//! handle the request paths touch is resolved once here, so recording is an
//! atomic add (counters) or a lock-free observation (histograms).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use latchkey_core::observe::{Api, Observe};
use latchkey_core::verdict::Verdict;

/// Latency buckets for calls and queries: 25 µs to about 1.6 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_025, 2.0, 17).expect("valid buckets")
}

/// Lag buckets (flushes, invalidations): 1 ms to about 65 s.
fn lag_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 17).expect("valid buckets")
}

/// Most methods timed under their own name; others count as `other`.
const MAX_CALL_SERIES: usize = 64;

pub struct Metrics {
    registry: Registry,
    /// `[api][verdict]`, resolved up front.
    verdicts: [[IntCounter; Verdict::ALL.len()]; Api::ALL.len()],
    calls: HistogramVec,
    /// Handles of `calls` by gRPC path, resolved as paths are first seen.
    call_handles: std::sync::RwLock<HashMap<String, Histogram>>,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: IntGauge,
    lookups: Histogram,
    lookup_errors: IntCounter,
    pub lookups_refused: IntCounter,
    pub last_used_flush_lag: Histogram,
    pub last_used_write_errors: IntCounter,
    pub invalidation_lag: Histogram,
    pub change_log_read_errors: IntCounter,
    /// Tokens cached by warming at start.
    pub cache_warmed_tokens: IntGauge,
    /// How long warming took (or ran, until `cache.warm_timeout`).
    pub cache_warm_seconds: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// # Panics
    /// Never: every metric's name and labels are fixed and distinct.
    pub fn new() -> Self {
        let registry = Registry::new();
        let verdicts_vec = IntCounterVec::new(
            Opts::new(
                "latchkey_verdicts_total",
                "Verdicts answered, by API (verify, check, introspect or tokenreview) and verdict",
            ),
            &["api", "verdict"],
        )
        .expect("valid metric");
        let verdicts = Api::ALL.map(|api| {
            Verdict::ALL.map(|v| verdicts_vec.with_label_values(&[api.label(), v.label()]))
        });
        let calls = HistogramVec::new(
            HistogramOpts::new(
                "latchkey_grpc_call_duration_seconds",
                "gRPC calls by method, from request to response headers",
            )
            .buckets(latency_buckets()),
            &["method"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric")
        };
        let metrics = Metrics {
            verdicts,
            call_handles: std::sync::RwLock::new(HashMap::new()),
            cache_hits: counter(
                "latchkey_cache_hits_total",
                "Verify and Check answered from the cache",
            ),
            cache_misses: counter(
                "latchkey_cache_misses_total",
                "Verify and Check that read the database",
            ),
            cache_entries: IntGauge::new(
                "latchkey_cache_entries",
                "Tokens and unknown digests in the cache",
            )
            .expect("valid metric"),
            lookups: histogram(
                "latchkey_db_lookup_duration_seconds",
                "Cache misses' database lookups, including the wait for a lookup connection",
                latency_buckets(),
            ),
            lookup_errors: counter(
                "latchkey_db_lookup_errors_total",
                "Cache misses whose database lookup failed",
            ),
            lookups_refused: counter(
                "latchkey_lookups_refused_total",
                "Cache misses answered UNAVAILABLE without a lookup: lookups.max_pending were in progress",
            ),
            last_used_flush_lag: histogram(
                "latchkey_last_used_flush_lag_seconds",
                "Age of the oldest use in each last-used write when it is written",
                lag_buckets(),
            ),
            last_used_write_errors: counter(
                "latchkey_last_used_write_errors_total",
                "Last-used writes that failed (retried with the next flush)",
            ),
            invalidation_lag: histogram(
                "latchkey_invalidation_lag_seconds",
                "From a change's commit elsewhere to this replica dropping its cache entries",
                lag_buckets(),
            ),
            change_log_read_errors: counter(
                "latchkey_change_log_read_errors_total",
                "Reads of the change log that failed",
            ),
            cache_warmed_tokens: IntGauge::new(
                "latchkey_cache_warmed_tokens",
                "Tokens cached at start, before reporting SERVING (cache.warm_window)",
            )
            .expect("valid metric"),
            cache_warm_seconds: Gauge::new(
                "latchkey_cache_warm_seconds",
                "How long warming the cache at start took (cache.warm_timeout if it gave up)",
            )
            .expect("valid metric"),
            calls,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(verdicts_vec),
            Box::new(metrics.lookups_refused.clone()),
            Box::new(metrics.calls.clone()),
            Box::new(metrics.cache_hits.clone()),
            Box::new(metrics.cache_misses.clone()),
            Box::new(metrics.cache_entries.clone()),
            Box::new(metrics.lookups.clone()),
            Box::new(metrics.lookup_errors.clone()),
            Box::new(metrics.last_used_flush_lag.clone()),
            Box::new(metrics.invalidation_lag.clone()),
            Box::new(metrics.change_log_read_errors.clone()),
            Box::new(metrics.cache_warmed_tokens.clone()),
            Box::new(metrics.cache_warm_seconds.clone()),
        ];
        for c in collectors {
            metrics.registry.register(c).expect("distinct metrics");
        }
        metrics
            .registry
            .register(Box::new(metrics.last_used_write_errors.clone()))
            .expect("distinct metrics");
        metrics
    }

    pub fn verdict(&self, api: Api, verdict: Verdict) {
        let at = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.verdicts[api as usize][at].inc();
    }

    /// Records a cache miss's lookup and whether it failed.
    pub fn lookup(&self, took: Duration, failed: bool) {
        self.lookups.observe(took.as_secs_f64());
        if failed {
            self.lookup_errors.inc();
        }
    }

    /// The histogram of calls to `path`, if a call to it was timed before.
    pub fn seen_call_histogram(&self, path: &str) -> Option<Histogram> {
        self.call_handles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// The histogram of calls to `path`; `known` says the server has such a
    /// method (it did not answer `UNIMPLEMENTED`).
    pub fn call_histogram(&self, path: &str, known: bool) -> Histogram {
        if !known {
            return self.calls.with_label_values(&["other"]);
        }
        if let Some(h) = self.seen_call_histogram(path) {
            return h;
        }
        // Only methods the server has get a series of their own, and only
        // so many: whatever paths clients send, the series stay few.
        let mut handles = self
            .call_handles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handles.len() >= MAX_CALL_SERIES {
            return self.calls.with_label_values(&["other"]);
        }
        let handle = self.calls.with_label_values(&[path]);
        handles.insert(path.to_owned(), handle.clone());
        handle
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Observe for Metrics {
    fn verdict(&self, api: Api, verdict: Verdict) {
        Metrics::verdict(self, api, verdict);
    }

    fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    fn lookup(&self, took: Duration, failed: bool) {
        Metrics::lookup(self, took, failed);
    }

    fn lookup_refused(&self) {
        self.lookups_refused.inc();
    }

    fn call(&self, path: &str, known: bool, took: Duration) {
        self.call_histogram(path, known).observe(took.as_secs_f64());
    }
}

/// The metrics listener's routes: `GET /metrics` in Prometheus' text
/// format, `refresh` run before each scrape (to read gauges such as the
/// cache's size); anything else is 404.
pub fn router(metrics: Arc<Metrics>, refresh: impl Fn() + Send + Sync + 'static) -> axum::Router {
    use axum::http::{StatusCode, header};

    let refresh = Arc::new(refresh);
    let scrape = move || {
        refresh();
        let body = metrics.render();
        async move { ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body) }
    };
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not found; try /metrics\n",
            )
        })
}
