//! The gRPC boundary: the only place that sees generated proto types. Each
//! service converts requests to domain calls and results back to proto.

mod admin;
mod convert;
mod ext_authz;
mod self_service;
mod transport;
mod verify;

pub use admin::AdminService;
pub use ext_authz::{
    ExtAuthzService, OWNER_HEADER, REQUIRED_SCOPES, SCOPES_HEADER, TOKEN_ID_HEADER,
};
pub use self_service::SelfService;
pub use transport::GrpcService;
pub use verify::{
    TokenVerifyServer, VerifyReply, VerifyService, decode_rendered, render as render_token,
};

/// Types generated from `proto/latchkey/v1`, with clients for callers and tests.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("latchkey.v1");

    /// Encoded descriptors of latchkey's protos and their imports, for server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/latchkey_descriptor.bin"));

    // These two messages carry a token secret; their Debug says so instead of
    // printing it. A Verify request's token is zeroed when the request is
    // dropped, after it is answered. (CreateTokenResponse has no such Drop:
    // clients move its secret out, which a Drop would forbid.)
    impl Drop for VerifyRequest {
        fn drop(&mut self) {
            zeroize::Zeroize::zeroize(&mut self.token);
        }
    }

    impl std::fmt::Debug for CreateTokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreateTokenResponse")
                .field("token", &self.token)
                .field("secret", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for VerifyRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("VerifyRequest")
                .field("token", &"<redacted>")
                .field("required_scopes", &self.required_scopes)
                .finish()
        }
    }
}

/// Encoded descriptors of Envoy's external authorization API and its
/// imports, for server reflection.
pub const ENVOY_EXT_AUTHZ_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));

/// The call's `authorization` metadata, if it is present and text.
fn authorization<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// Largest request message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
