//! Writes the encoded descriptor set of Envoy's external authorization API
//! for server reflection (compiled with protox: no system `protoc`), and
//! generates the TokenVerify server that answers with pre-encoded tokens
//! and the Check server that decodes only what it reads.
//! latchkey's own messages, clients and servers come from `latchkey-proto`.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.join("vendor").display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Envoy's external authorization API, for reflection only (the Rust
    // types come from the envoy-types crate).
    let vendor = proto.join("vendor");
    let envoy = protox::compile(
        [vendor.join("envoy/service/auth/v3/external_auth.proto")],
        [&vendor],
    )?;
    fs::write(
        out_dir.join("envoy_ext_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&envoy),
    )?;
    // The server side of TokenVerify is generated again by hand, answering
    // with a response type that writes the token's pre-encoded bytes (see
    // `grpc::verify`); clients use the one latchkey-proto generates.
    let verify = tonic_prost_build::manual::Service::builder()
        .name("TokenVerify")
        .package("latchkey.v1")
        .method(
            tonic_prost_build::manual::Method::builder()
                .name("verify")
                .route_name("Verify")
                .input_type("crate::grpc::pb::VerifyRequest")
                .output_type("crate::grpc::verify::VerifyReply")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    // The server side of Envoy's Check, taking a request type that decodes
    // only the fields Check reads (see `grpc::ext_authz::wire`).
    let check = tonic_prost_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(
            tonic_prost_build::manual::Method::builder()
                .name("check")
                .route_name("Check")
                .input_type("crate::grpc::ext_authz::wire::CheckCall")
                .output_type("crate::grpc::ext_authz::reply::CheckReply")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .compile(&[verify, check]);
    Ok(())
}
