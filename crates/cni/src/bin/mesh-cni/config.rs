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
use tracing::{info, warn};

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
    /// The host's CNI bin directory: install the plugin there (with
    /// `--cni-conf-dir`) while the agent runs, and take it out on exit.
    #[arg(long, env = "CNI_BIN_DIR", requires = "cni_conf_dir")]
    cni_bin_dir: Option<PathBuf>,
    /// The host's CNI configuration directory, whose network configuration
    /// the plugin is chained into.
    #[arg(long, env = "CNI_CONF_DIR", requires = "cni_bin_dir")]
    cni_conf_dir: Option<PathBuf>,
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
    install: Option<(PathBuf, PathBuf)>,
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
        if self.cni_bin_dir.is_some() && self.plugin_socket.is_none() {
            problems.push(
                "  CNI_BIN_DIR: the plugin it installs asks the agent: set PLUGIN_SOCKET too"
                    .into(),
            );
        }
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
            install: self.cni_bin_dir.zip(self.cni_conf_dir),
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
    let install = match (&process.install, &process.plugin_socket) {
        (Some((bin_dir, conf_dir)), Some(socket)) => Some(cni::install::InstallOptions {
            plugin_binary: std::env::current_exe().context("finding our own binary")?,
            bin_dir: bin_dir.clone(),
            conf_dir: conf_dir.clone(),
            agent_socket: socket.display().to_string(),
            exclude_namespaces: vec!["kube-system".into()],
        }),
        _ => None,
    };
    if let Some(options) = install.clone() {
        tokio::spawn(install_plugin(options, shutdown.clone()));
    }
    cni::node::run(agent, settings, shutdown).await;
    if let Some(options) = install {
        match cni::install::uninstall(&options) {
            Ok(()) => info!("CNI plugin uninstalled"),
            Err(e) => warn!(error = %e, "uninstalling the CNI plugin failed"),
        }
    }
    Ok(())
}

/// Installs the plugin once the node has a network configuration to chain
/// into (the network plugin's installer may come after us), retrying.
async fn install_plugin(options: cni::install::InstallOptions, shutdown: CancellationToken) {
    loop {
        let pause = match cni::install::install(&options) {
            Ok(path) => {
                info!(config = %path.display(), "CNI plugin installed");
                return;
            }
            Err(e @ cni::install::InstallError::NoNetworkConfig(_)) => {
                info!("{e}; waiting for the network plugin");
                Duration::from_secs(2)
            }
            Err(e) => {
                warn!(error = %e, "installing the CNI plugin failed; retrying");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
