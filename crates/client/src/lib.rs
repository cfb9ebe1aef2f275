//! A client for [latchkey](https://github.com/latchkey/latchkey), the
//! API-token service.
//!
//! Check bearer tokens in an axum or tonic service with a tower layer:
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_client::Error> {
//! use axum::{Extension, Router, routing::get};
//! use latchkey_client::{Client, RequireToken, VerifiedToken};
//!
//! let latchkey = Client::builder("http://latchkey:50051").connect_lazy()?;
//! let app: Router = Router::new()
//!     .route("/reports", get(|Extension(t): Extension<VerifiedToken>| async move { t.owner }))
//!     .route_layer(RequireToken::new(latchkey).scopes(["reports:read"]));
//! # Ok(()) }
//! ```
//!
//! The layer reads `Authorization: Bearer`, asks latchkey's Verify with the
//! route's scopes, and either puts the [`VerifiedToken`] into the request's
//! extensions or answers as RFC 6750 says: 401 with `WWW-Authenticate:
//! Bearer error="invalid_token"`, 403 with `error="insufficient_scope"`, and
//! 503 when latchkey cannot be asked (it fails closed). gRPC calls get the
//! matching status (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNAVAILABLE`).
//!
//! [`Client::verify`] is the call underneath, retried with backoff when
//! latchkey is unavailable; [`Client::admin`] is the TokenAdmin API with the
//! admin credential attached. Answers are not cached unless
//! [`Builder::cache`] asks for it: a cached VALID keeps a revoked token
//! working for up to that long.

#![forbid(unsafe_code)]

mod cache;
mod client;
mod error;
mod layer;

pub use client::{Admin, Builder, Client, MAX_CACHE_TTL};
pub use error::Error;
/// latchkey's gRPC API: messages, and the generated clients and servers.
pub use latchkey_proto as pb;
pub use layer::{RequireToken, RequireTokenService, VerifiedToken};
pub use pb::Verdict;
