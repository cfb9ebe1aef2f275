//! latchkey's core: what a token is (format, digest, scopes, record,
//! status), owners, the audit trail's vocabulary, time, the change log's
//! reader state, verdicts, the verification cache and the bounds on its
//! misses, and what the request path notes for background work.
//!
//! No transport, no database and no metrics library: its `Cargo.toml`
//! names none of tonic, prost, sea-orm, sqlx, hyper, axum or prometheus, so
//! every other crate can depend on it and it on none of them.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod changes;
pub mod client;
pub mod clock;
pub mod credential;
pub mod field;
pub mod limit;
pub mod lookups;
pub mod memory;
pub mod observe;
pub mod owner;
pub mod query;
pub mod token;
pub mod usage;
pub mod verdict;
