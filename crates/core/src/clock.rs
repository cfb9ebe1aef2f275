//! Wall-clock time as latchkey sees it: a [`Clock`] handed to everything that
//! judges expiry, so tests can move time instead of sleeping through a TTL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch, UTC.
///
/// Microseconds are what the database stores, so a value survives a round trip
/// unchanged and comparisons in SQL and in memory agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable time: "never" for deadlines that overflow.
    pub const MAX: Timestamp = Timestamp(i64::MAX);
    /// The latest time a protobuf `Timestamp` (and RFC 3339) can carry,
    /// 9999-12-31T23:59:59.999999Z: no stored time may lie past it.
    pub const LATEST: Timestamp = Timestamp(253_402_300_799_999_999);

    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds and nanoseconds since the epoch, as protobuf wants them.
    pub const fn to_unix(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000);
        let nanos = (self.0.rem_euclid(1_000_000) * 1_000) as i32;
        (secs, nanos)
    }

    /// From seconds and nanoseconds since the epoch (sub-microsecond part
    /// dropped). `None` if out of range.
    pub fn from_unix(secs: i64, nanos: i32) -> Option<Self> {
        secs.checked_mul(1_000_000)
            .and_then(|m| m.checked_add(i64::from(nanos) / 1_000))
            .map(Timestamp)
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        i64::try_from(d.as_micros())
            .ok()
            .and_then(|m| self.0.checked_add(m))
            .map(Timestamp)
    }

    /// `self - d`, saturating at the earliest representable time.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// How far `self` lies after `earlier`; zero if it does not.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests of expiry, and for anyone
/// embedding latchkey who needs deterministic time.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at the system clock's current time.
    pub fn new() -> Self {
        ManualClock(AtomicI64::new(SystemClock.now().as_micros()))
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_micros(), Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_parts_round_trip_for_times_before_and_after_the_epoch() {
        for micros in [
            0,
            1,
            999_999,
            1_000_000,
            -1,
            -1_000_001,
            1_795_000_000_123_456,
        ] {
            let t = Timestamp::from_micros(micros);
            let (s, n) = t.to_unix();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(Timestamp::from_unix(s, n), Some(t));
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        clock.advance(Duration::from_secs(30 * 86_400));
        assert_eq!(
            clock.now().saturating_since(t0),
            Duration::from_secs(30 * 86_400)
        );
    }
}
