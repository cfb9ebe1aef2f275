//! Background work owned by the application: each task is an
//! `async fn run(self, shutdown) -> anyhow::Result<()>` that finishes its work
//! (flushes what it holds) when `shutdown` is cancelled.

pub mod change_feed;
pub mod last_used;
pub mod rekey;
