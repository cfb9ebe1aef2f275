//! latchkey: an API-token service. It issues tokens, keeps only their HMAC,
//! and answers "is this token good for these scopes?" from memory, over gRPC.
//!
//! # Layout
//!
//! - [`app`]: start-up and shutdown; [`config`] and [`telemetry`] feed it.
//! - [`grpc`]: the services (`TokenAdmin`, `TokenSelf`, `TokenVerify`, Envoy's
//!   `Authorization`); with [`web`], which reads a cached token's encoding,
//!   the only module that sees proto types.
//! - [`lifecycle`] (create, list, update, revoke, restore, delete, renew,
//!   owners, limits, events), [`verifier`] (the Verify path) and [`auth`] (who
//!   may administer): the service logic.
//! - [`token`]: format, digest, scopes, the record and its status;
//!   [`owner`]: owners and their disabled state; [`audit`]: the audit trail.
//! - [`cache`]: the verification cache and its race-safe fills; [`lookups`]:
//!   the bounds on its misses; [`memory`]: its allocations marked long-lived.
//! - [`web`]: the HTTP listener (RFC 7662 introspection, Kubernetes
//!   TokenReview), on the same verifier.
//! - [`store`]: the only module that imports sea_orm.
//! - [`tasks`]: background work (the last-used flusher).
//! - [`clock`]: time, injectable for tests.
//! - [`error`]: the request-path error and its mapping to gRPC status.
//!
//! Dependencies point inward: `token`, `owner`, `audit`, `cache` and `clock`
//! import neither tonic nor sea_orm.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod changes;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod lifecycle;
pub mod lookups;
pub mod memory;
pub mod metrics;
pub mod owner;
pub mod serve;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod verifier;
pub mod web;

pub use app::{Application, Options};
pub use config::Settings;
