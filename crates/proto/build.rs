//! Compiles latchkey's protos (`proto/`, the API contract) with protox (no
//! system `protoc`) into messages, clients and servers, and writes the
//! encoded descriptor set that server reflection and JSON output use.

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
    let proto = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto.join("latchkey").display()
    );
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto.join(p)).collect();
    let descriptors = protox::compile(&files, [&proto])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("latchkey_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // These carry a secret (a token's, a console link's): their Debug
        // is written by hand in lib.rs so that it prints no secret.
        .skip_debug([
            "latchkey.v1.CreateTokenResponse",
            "latchkey.v1.VerifyRequest",
            "latchkey.v1.CreateConsoleLinkResponse",
        ])
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
