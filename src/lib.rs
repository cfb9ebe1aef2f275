//! latchkey, the server: configuration, wiring, the listeners and their one
//! accept path, the background tasks, metrics, start-up and shutdown. The
//! token service itself lives in the workspace's crates, whose dependencies
//! point inward (their `Cargo.toml`s say so, `cargo tree` shows it):
//!
//! - `latchkey-core`: tokens (format, digest, scopes, record, status),
//!   owners, the audit vocabulary, time, the change log's reader state,
//!   verdicts, the verification cache and the bounds on its misses, what the
//!   request path notes for background work. No transport, no database.
//! - `latchkey-store` (and `latchkey-migrations`): SQLite and PostgreSQL
//!   through sea-orm.
//! - `latchkey-service`: Verify and the token lifecycle, on the two above.
//! - `latchkey-api`: the gRPC services and HTTP routes, and the mapping of
//!   the request-path error to their answers.
//!
//! This crate re-exports their modules under the names the server and its
//! tests use.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod readiness;
pub mod serve;
pub mod setup;
pub mod tasks;
pub mod telemetry;
pub mod tls;

pub use latchkey_api::{grpc, peer, status, web};
pub use latchkey_core::{
    audit, cache, changes, clock, credential, lookups, memory, observe, owner, query, token, usage,
    verdict,
};
pub use latchkey_service::{auth, console, error, lifecycle, limits, verifier, watch};
pub use latchkey_store as store;

pub use app::{Application, Options};
pub use config::Settings;
