//! Background work owned by the application: each task is an
//! `async fn run(self, shutdown) -> anyhow::Result<()>` that finishes its work
//! (flushes what it holds) when `shutdown` is cancelled.
//!
//! - [`change_feed`] reads the change log other replicas write and drops the
//!   cache entries their changes touch.
//! - [`last_used`] writes behind the uses Verify noted, and the moves of
//!   tokens to the primary HMAC key.
//! - [`expiry_warnings`] gives EXPIRING events as tokens near their expiry.
//! - [`warm_up`] fills the cache with the tokens used recently, at start.

pub mod change_feed;
pub mod expiry_warnings;
pub mod last_used;
pub mod warm_up;
