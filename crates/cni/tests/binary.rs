//! The `mesh-cni` binary's flags: what it refuses before doing anything.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn installing_the_plugin_without_the_agents_socket_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .args(["agent", "--node-name", "node-a", "--cni-bin-dir", "/nonexistent/bin"])
        .args(["--cni-conf-dir", "/nonexistent/net.d"])
        .env_remove("PLUGIN_SOCKET")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set PLUGIN_SOCKET too"), "{stderr}");

    // One directory without the other: clap says which is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-cni"))
        .args(["agent", "--node-name", "node-a", "--cni-bin-dir", "/nonexistent/bin"])
        .env_remove("CNI_CONF_DIR")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cni-conf-dir"), "{stderr}");
}
