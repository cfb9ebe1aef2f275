//! Compiles the repository's `proto/` (the API contract) with protox (no
//! system `protoc`), generates the tonic server and client code, and writes
//! the encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

const PROTOS: [&str; 6] = [
    "latchkey/v1/token.proto",
    "latchkey/v1/owner.proto",
    "latchkey/v1/event.proto",
    "latchkey/v1/admin.proto",
    "latchkey/v1/verify.proto",
    "latchkey/v1/self.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto.join(p)).collect();
    let descriptors = protox::compile(&files, [&proto])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("latchkey_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
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
    tonic_prost_build::configure()
        // These two carry a token secret: their Debug is written by hand in
        // `grpc::redact` so that it prints no secret.
        .skip_debug([
            "latchkey.v1.CreateTokenResponse",
            "latchkey.v1.VerifyRequest",
        ])
        .btree_map(".")
        .compile_fds(descriptors)?;
    // The server side of TokenVerify is generated again by hand, answering
    // with a response type that writes the token's pre-encoded bytes (see
    // `grpc::verify`); clients use the message generated above.
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
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .compile(&[verify]);
    Ok(())
}
