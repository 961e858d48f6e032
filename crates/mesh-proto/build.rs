//! Compiles ../../proto with protoc (Debian: protobuf-compiler and
//! libprotobuf-dev for the well-known types; scripts/setup.sh installs both).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/ca/ca.proto",
    "istio/zds/zds.proto",
    "mesh/l7/routes.proto",
    "mesh/l7/authorization.proto",
    "google/rpc/status.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/service/discovery/v3/discovery.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with `env!`: a build-script binary is reused
    // across checkouts that share a target directory, and a path compiled
    // into it would point at the checkout that first built it.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?;
    let root = PathBuf::from(manifest_dir).join("../../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = prost_build::Config::new();
    // `prost::Name` on every message: type URLs and `Any` packing come from
    // the generated package and message names, never from strings we type.
    config.enable_type_names();
    // The compiled descriptors, so a test can compare field numbers and
    // types with the table of Istio's (proto/istio-fields.txt).
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);
    config.file_descriptor_set_path(out_dir.join("mesh_descriptors.bin"));
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &files,
        &[root],
    )?;
    Ok(())
}
