//! `meshctl`: the mesh's command line.

mod demo;
mod local;
mod policy;
mod proxy_config;
mod waypoint;

use clap::{Parser, Subcommand};

/// The mesh's command line.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A cluster in a box on this host (network namespaces; needs root).
    Local {
        #[command(subcommand)]
        command: local::LocalCommand,
    },
    /// What a node's ztunnel (or a waypoint) knows.
    ProxyConfig(proxy_config::Args),
    /// Who enforces AuthorizationPolicies, and what was changed in them.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Waypoints of a local cluster.
    Waypoint {
        #[command(subcommand)]
        command: waypoint::WaypointCommand,
    },
    /// The article's example, narrated (needs root).
    Demo(demo::Args),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Local { command } => local::run(command),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::Policy { command } => policy::run(command),
        Command::Waypoint { command } => waypoint::run(command),
        Command::Demo(args) => demo::run(args),
    };
    if let Err(e) = result {
        eprintln!("meshctl: {e:#}");
        std::process::exit(1);
    }
}

/// Fails with a clear message when not root.
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:").map(|u| u.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false);
    if root {
        Ok(())
    } else {
        anyhow::bail!(
            "{what} needs root: it creates network namespaces and iptables rules (try: sudo meshctl ...)"
        )
    }
}

/// Where our other binaries are: next to this one.
pub(crate) fn bin_dir() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?;
    for bin in ["controlplane", "ztunnel", "mesh-cni", "waypoint", "mesh-sample"] {
        if !dir.join(bin).exists() {
            anyhow::bail!(
                "{} not found next to meshctl; build the workspace (cargo build --workspace --bins)",
                bin
            );
        }
    }
    Ok(dir.to_path_buf())
}
