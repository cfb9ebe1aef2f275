//! The gRPC boundary: the only place that sees generated proto types. Each
//! service converts requests to domain calls and results back to proto.

mod admin;
mod convert;
mod ext_authz;
mod immediate;
mod token_self;
mod transport;
mod verify;
mod watch;

use std::future::Future;
use std::sync::Arc;

use crate::error::Error;

pub use admin::AdminService;
pub use ext_authz::wire::CheckCall;
pub use ext_authz::{
    CHECK_PATH, ExtAuthzService, OWNER_HEADER, REQUIRED_SCOPES, SCOPES_HEADER, TOKEN_ID_HEADER,
};
pub use immediate::Immediate;
pub use token_self::SelfService;
pub use transport::GrpcService;
pub use verify::{
    TokenVerifyServer, VerifyReply, VerifyService, decode_rendered, render as render_token,
};
pub use watch::{EventStream, Watchers};

/// Types generated from `proto/latchkey/v1`, with clients for callers and tests.
pub use latchkey_proto as pb;

/// Encoded descriptors of Envoy's external authorization API and its
/// imports, for server reflection.
pub const ENVOY_EXT_AUTHZ_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));

/// Runs a handler's work and answers its error as a gRPC status
/// ([`crate::status::status`]).
async fn answer<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, tonic::Status> {
    work.await.map_err(crate::status::status)
}

/// The call's `authorization` metadata, if it is present and text.
fn authorization<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// Largest request message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The services a server built by [`routes`] answers from the cache and the
/// database: readiness reports on these (the server itself, `""`, stays
/// SERVING for liveness).
pub const API_SERVICES: [&str; 4] = [
    <pb::token_admin_server::TokenAdminServer<AdminService> as tonic::server::NamedService>::NAME,
    <pb::token_self_server::TokenSelfServer<SelfService> as tonic::server::NamedService>::NAME,
    <TokenVerifyServer<VerifyService> as tonic::server::NamedService>::NAME,
    <ext_authz::AuthorizationServer<ExtAuthzService> as tonic::server::NamedService>::NAME,
];

/// The services one server answers.
pub struct Services {
    pub admin: AdminService,
    pub token_self: SelfService,
    pub verify: VerifyService,
    /// Shared with [`GrpcService::answering`], which answers Check on a
    /// cached token without tonic.
    pub ext_authz: Arc<ExtAuthzService>,
}

/// Every gRPC service behind one router (the caller adds health): `services`, and server reflection
/// (v1 and v1alpha, over latchkey's protos, health's, Envoy's external
/// authorization and `google.rpc` error details), each with the message cap
/// ([`MAX_MESSAGE_BYTES`]; [`GrpcService`] enforces it for every service).
///
/// # Errors
/// If the reflection service cannot be built from the descriptors.
pub fn routes(
    services: Services,
) -> Result<tonic::service::Routes, tonic_reflection::server::Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(ENVOY_EXT_AUTHZ_DESCRIPTOR_SET)
            // So clients can decode google.rpc.BadRequest error details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let Services {
        admin,
        token_self,
        verify,
        ext_authz,
    } = services;
    Ok(tonic::service::Routes::new(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            pb::token_admin_server::TokenAdminServer::new(admin)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::token_self_server::TokenSelfServer::new(token_self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(TokenVerifyServer::new(verify).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(
            ext_authz::AuthorizationServer::from_arc(ext_authz)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        ))
}
