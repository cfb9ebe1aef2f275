//! latchkey's gRPC API, package `latchkey.v1`: the messages, a client and a
//! server for each service (`TokenAdmin`, `TokenVerify`, `TokenSelf`), and
//! [`FILE_DESCRIPTOR_SET`]. Most callers want `latchkey-client`, which
//! wraps these with connection settings, retries and a tower layer.
//!
//! The messages that carry a secret, [`CreateTokenResponse`],
//! [`VerifyRequest`] and [`CreateConsoleLinkResponse`], print `<redacted>` in
//! its place when debug-printed.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("latchkey.v1");

/// Encoded descriptors of latchkey's protos and their imports, for server
/// reflection and for proto3 JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/latchkey_descriptor.bin"));

// A Verify request's token is zeroed when the request is dropped, after it is
// answered or sent. (CreateTokenResponse has no such Drop: clients move its
// secret out, which a Drop would forbid.)
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
            .field("cost", &self.cost)
            .finish()
    }
}

impl std::fmt::Debug for CreateConsoleLinkResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateConsoleLinkResponse")
            .field("url", &"<redacted>")
            .field("expire_time", &self.expire_time)
            .finish()
    }
}
