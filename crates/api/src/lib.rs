//! latchkey's API surfaces on the service logic: the gRPC services
//! ([`grpc`]: TokenAdmin, TokenSelf, TokenVerify, Envoy's Authorization, and
//! the transport every call goes through), the HTTP routes ([`web`]: RFC 7662
//! introspection, Kubernetes TokenReview), and the one mapping of the
//! request-path error to their answers ([`status`]).

#![forbid(unsafe_code)]

pub mod grpc;
pub mod peer;
pub mod status;
pub mod web;

// The vocabulary of the crates below, under the names the modules use.
pub use latchkey_service::{
    audit, auth, client, clock, console, error, lifecycle, limits, observe, owner, query, store,
    token, usage, verdict, verifier, watch,
};
