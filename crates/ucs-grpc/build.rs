//! Compiles `proto/ucs/v1/ucs.proto` with the pure-Rust `protox`, so a fresh
//! machine without `protoc` builds, and nothing is downloaded at build time.
//! Also writes the encoded descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    // A directory makes cargo rerun when any file below it changes.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(["ucs/v1/ucs.proto"], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ucs_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
