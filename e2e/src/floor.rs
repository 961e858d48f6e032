//! The relay floor: `meshbench-relay` processes on the mesh path's hops,
//! with the mesh's own capture rules in their pods (see that binary's
//! charter). Started after the cluster, stopped on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use cni::rules::{Backend, RuleSettings};
use localmesh::PodInfo;

/// The floor's pods' namespace (not in the mesh).
pub const NAMESPACE: &str = "floor";

/// The floor's pods (`client`, and `server` with an echo on 8080 and a
/// sink on 9000), as cluster YAML to append.
pub fn pods() -> String {
    crate::pods::plain_pair(NAMESPACE)
}

/// The two relays; killed when dropped (also on an early return).
pub struct RelayFloor {
    relays: Vec<Child>,
}

impl RelayFloor {
    /// Installs the capture rules in both pods (as `mesh-cni` does for
    /// enrolled pods in the local mesh: no probe exemption), then starts
    /// `relay` (the `meshbench-relay` binary) as an outbound relay in
    /// `client`'s namespace and an inbound relay in `server`'s, and waits
    /// until a byte goes through them to `server`'s echo on 8080.
    pub fn start(relay: &Path, client: &PodInfo, server: &PodInfo) -> anyhow::Result<Self> {
        let settings = RuleSettings { probe_source: None, ..RuleSettings::default() };
        for pod in [client, server] {
            let netns = File::open(format!("/var/run/netns/{}", pod.netns))
                .with_context(|| format!("opening namespace {}", pod.netns))?;
            cni::redirect::install(&netns, Backend::Iptables, &settings)
                .with_context(|| format!("capture rules in {}", pod.netns))?;
        }
        let spawn = |netns: &str, role: &str, port: u16| {
            Command::new(relay)
                .args(["--netns", netns, "--role", role, "--listen", &format!("0.0.0.0:{port}")])
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!("starting {} (cargo build --workspace --bins)", relay.display())
                })
        };
        let mut floor = RelayFloor { relays: Vec::new() };
        floor.relays.push(spawn(&server.netns, "inbound", settings.hbone_port)?);
        floor.relays.push(spawn(&client.netns, "outbound", settings.outbound_port)?);
        for _ in 0..100 {
            if crate::probe::first_byte(&client.netns, SocketAddr::new(server.ip, 8080)).is_ok() {
                return Ok(floor);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!(
            "the relay floor did not carry a byte from {} to {}",
            client.netns,
            server.netns
        )
    }

    /// The relays' labels and process ids, outbound first.
    pub fn pids(&self) -> Vec<(String, u32)> {
        ["relay-inbound", "relay-outbound"]
            .iter()
            .zip(&self.relays)
            .map(|(label, child)| (label.to_string(), child.id()))
            .rev()
            .collect()
    }
}

impl Drop for RelayFloor {
    fn drop(&mut self) {
        for relay in &mut self.relays {
            let _ = relay.kill();
            let _ = relay.wait();
        }
    }
}
