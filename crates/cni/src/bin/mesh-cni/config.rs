//! The agent's flags and environment: the only place they are read. Every
//! bad value is reported at once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use cni::agent::{Agent, AgentConfig, AgentMetrics};
use cni::node::{NodeSettings, Source};
use cni::rules::{Backend, RuleSettings};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The mesh's node agent (`mesh-cni agent`); as a CNI plugin the container
/// runtime runs it with `CNI_COMMAND` set.
#[derive(Debug, Parser)]
#[command(name = "mesh-cni", version)]
pub(crate) struct Flags {
    /// Must be `agent`.
    role: String,
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Read pods and namespaces from this directory of YAML (local mesh)
    /// instead of the Kubernetes API.
    #[arg(long, env = "MESH_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// How often the directory is read, in milliseconds.
    #[arg(long, env = "MESH_POLL_INTERVAL_MS", default_value = "500")]
    poll_interval_ms: u64,
    /// Cluster id in workload uids (the control plane's).
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// ZDS socket ztunnel connects to.
    #[arg(long, env = "ZDS_SOCKET", default_value = "/var/run/ztunnel/ztunnel.sock")]
    zds_socket: PathBuf,
    /// Socket the CNI plugin asks (none: no plugin, as in the local mesh).
    #[arg(long, env = "PLUGIN_SOCKET")]
    plugin_socket: Option<PathBuf>,
    /// How rules are installed.
    #[arg(long, env = "REDIRECT_BACKEND", value_enum, default_value = "iptables")]
    backend: BackendFlag,
    /// ztunnel's socket mark.
    #[arg(long, env = "SOCKET_MARK", default_value = "1337")]
    mark: u32,
    /// Source address of the node's health probes, exempt from capture.
    #[arg(long, env = "PROBE_SOURCE", default_value = "169.254.7.127")]
    probe_source: String,
    /// Do not capture DNS.
    #[arg(long, env = "NO_DNS_CAPTURE")]
    no_dns_capture: bool,
    /// Prometheus endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:15022")]
    metrics_addr: String,
    /// Log filter.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendFlag {
    Iptables,
    Nftables,
}

/// The parts `main` needs besides the node settings.
pub(crate) struct Process {
    pub(crate) log: String,
    node: String,
    cluster_id: String,
    source: Option<(PathBuf, Duration)>,
    zds_socket: PathBuf,
    plugin_socket: Option<PathBuf>,
    metrics: SocketAddr,
}

impl Flags {
    pub(crate) fn validate(self) -> Result<(AgentConfig, Process), String> {
        let mut problems = Vec::new();
        if self.role != "agent" {
            problems.push(format!(
                "  role {:?}: expected `agent` (or run as a CNI plugin with CNI_COMMAND set)",
                self.role
            ));
        }
        if self.node_name.trim().is_empty() {
            problems.push("  NODE_NAME: must not be empty".into());
        }
        let probe = match self.probe_source.as_str() {
            "" | "none" => None,
            v => match v.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(e) => {
                    problems.push(format!("  PROBE_SOURCE={v:?}: {e} (expected an IP, or `none`)"));
                    None
                }
            },
        };
        let metrics = match self.metrics_addr.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("  METRICS_ADDR={:?}: {e}", self.metrics_addr));
                None
            }
        };
        let (Some(metrics), true) = (metrics, problems.is_empty()) else {
            return Err(problems.join("\n"));
        };
        let config = AgentConfig {
            backend: match self.backend {
                BackendFlag::Iptables => Backend::Iptables,
                BackendFlag::Nftables => Backend::Nftables,
            },
            rules: RuleSettings {
                mark: self.mark,
                probe_source: probe,
                capture_dns: !self.no_dns_capture,
                ..RuleSettings::default()
            },
        };
        let process = Process {
            log: self.log,
            node: self.node_name,
            cluster_id: self.cluster_id,
            source: self.config_dir.map(|d| (d, Duration::from_millis(self.poll_interval_ms))),
            zds_socket: self.zds_socket,
            plugin_socket: self.plugin_socket,
            metrics,
        };
        Ok((config, process))
    }
}

/// Binds, builds and runs the agent until SIGTERM or Ctrl-C.
pub(crate) async fn run(
    config: AgentConfig,
    process: Process,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(parent) = process.zds_socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let zds = zds::ZdsListener::bind(&process.zds_socket)
        .with_context(|| format!("binding ZDS socket {}", process.zds_socket.display()))?;
    let plugin = match &process.plugin_socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Some(
                tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("binding {}", path.display()))?,
            )
        }
        None => None,
    };
    let metrics_listener = tokio::net::TcpListener::bind(process.metrics)
        .await
        .with_context(|| format!("binding --metrics-addr {}", process.metrics))?;
    println!(
        "listening metrics={} zds={}",
        metrics_listener.local_addr()?,
        process.zds_socket.display()
    );
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    tokio::spawn(proxy_core::http::serve(
        metrics_listener,
        Arc::new(cni::node::MetricsRoute(registry)),
        shutdown.clone().cancelled_owned(),
    ));
    let source = match process.source {
        Some((dir, poll)) => Source::Directory { dir, poll },
        None => Source::Kubernetes(
            kube::Client::try_default().await.context("connecting to the Kubernetes API")?,
        ),
    };
    let agent = Agent::new(config, metrics);
    let settings =
        NodeSettings { node: process.node, cluster_id: process.cluster_id, source, zds, plugin };
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
            shutdown.cancel();
        }
    });
    cni::node::run(agent, settings, shutdown).await;
    Ok(())
}
