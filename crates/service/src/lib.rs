//! latchkey's service logic, on the core and the store: Verify (the cache,
//! its fills and the bounds on lookups: [`verifier`]), the token lifecycle
//! ([`lifecycle`]), who may administer ([`auth`]), the event log's watchers
//! ([`watch`]), and the request-path error ([`error`]). No transport: the API crate maps [`error::Error`] to
//! gRPC and HTTP answers.

#![forbid(unsafe_code)]

pub mod auth;
pub mod console;
pub mod error;
pub mod lifecycle;
pub mod limits;
pub mod verifier;
pub mod watch;

// The core's vocabulary and the store, under the names this crate's modules
// use for them.
pub use latchkey_core::{
    audit, cache, changes, client, clock, lookups, memory, observe, owner, query, token, usage,
    verdict,
};
pub use latchkey_store as store;
