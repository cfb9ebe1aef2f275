//! Request decorations, assertions on statuses, and time in tests.

use super::*;

pub fn with_bearer<T>(msg: T, credential: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}")
            .parse()
            .expect("ascii header"),
    );
    req
}

/// `tokens` without their last-use times, which the flusher writes behind
/// whenever it likes: for comparing what an admin call changed.
pub fn without_last_use(tokens: Vec<pb::Token>) -> Vec<pb::Token> {
    tokens
        .into_iter()
        .map(|t| pb::Token {
            last_used_time: None,
            ..t
        })
        .collect()
}

/// Asserts `result` is INVALID_ARGUMENT and its message names `field`.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:"))
            || status.message().starts_with(&format!("{field}[")),
        "message {:?} does not name {field}",
        status.message()
    );
}

#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

pub fn now_plus(clock: &ManualClock, d: Duration) -> prost_types::Timestamp {
    use latchkey::clock::Clock as _;
    let (seconds, nanos) = clock.now().checked_add(d).unwrap().to_unix();
    prost_types::Timestamp { seconds, nanos }
}

/// The manual clock's time, as protobuf carries it.
pub trait ClockExt {
    fn now_timestamp(&self) -> prost_types::Timestamp;
    /// Sets the clock to `t` (microsecond precision, as stored).
    fn set_timestamp(&self, t: prost_types::Timestamp);
}

impl ClockExt for ManualClock {
    fn now_timestamp(&self) -> prost_types::Timestamp {
        now_plus(self, Duration::ZERO)
    }

    fn set_timestamp(&self, t: prost_types::Timestamp) {
        self.set(latchkey::clock::Timestamp::from_micros(
            t.seconds * 1_000_000 + i64::from(t.nanos / 1000),
        ));
    }
}

pub fn duration(secs: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: secs,
        nanos: 0,
    }
}

pub const DAY: u64 = 86_400;
