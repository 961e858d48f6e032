//! The relay floor: `meshbench-relay` processes on the mesh path's hops,
//! with the mesh's own capture rules in their pods (see that binary's
//! charter). Started after the cluster, stopped on drop.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use cni::rules::{Backend, RuleSettings};
use localmesh::PodInfo;

/// The two relays; killed when dropped (also on an early return).
pub(crate) struct RelayFloor {
    relays: Vec<Child>,
}

impl RelayFloor {
    /// Installs the capture rules in both pods (as `mesh-cni` does for
    /// enrolled pods in the local mesh: no probe exemption), then starts an
    /// outbound relay in `client`'s namespace and an inbound relay in
    /// `server`'s, and waits until the inbound one listens.
    pub(crate) fn start(
        bin_dir: &Path,
        client: &PodInfo,
        server: &PodInfo,
    ) -> anyhow::Result<Self> {
        let settings = RuleSettings { probe_source: None, ..RuleSettings::default() };
        for pod in [client, server] {
            let netns = File::open(format!("/var/run/netns/{}", pod.netns))
                .with_context(|| format!("opening namespace {}", pod.netns))?;
            cni::redirect::install(&netns, Backend::Iptables, &settings)
                .with_context(|| format!("capture rules in {}", pod.netns))?;
        }
        let exe = bin_dir.join("meshbench-relay");
        let spawn = |netns: &str, role: &str, port: u16| {
            Command::new(&exe)
                .args(["--netns", netns, "--role", role, "--listen", &format!("0.0.0.0:{port}")])
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!("starting {} (cargo build --release --workspace --bins)", exe.display())
                })
        };
        let mut floor = RelayFloor { relays: Vec::new() };
        floor.relays.push(spawn(&server.netns, "inbound", settings.hbone_port)?);
        floor.relays.push(spawn(&client.netns, "outbound", settings.outbound_port)?);
        // Ready when the inbound relay accepts and the outbound one carries
        // a byte through to the echo server.
        for _ in 0..100 {
            let to = std::net::SocketAddr::new(server.ip, 8080);
            if crate::measure::first_byte(&client.netns, to).is_ok() {
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

    /// The relays' process ids (outbound side first).
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        let labels = ["relay-inbound", "relay-outbound"];
        let mut pids: Vec<(String, u32)> =
            labels.iter().zip(&self.relays).map(|(l, c)| (l.to_string(), c.id())).collect();
        pids.reverse();
        pids
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
