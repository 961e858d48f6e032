//! Flags and environment: the only place the binary reads them. Every bad
//! value is reported at once, naming the variable and what was expected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hbone::TrustBundle;
use mesh_core::Identity;
use proxy_core::process::{parse_log_filter, resolve_addr};
use tracing_subscriber::filter::Targets;
use ztunnel::app::{AppConfig, ControlPlaneConfig};
use ztunnel::inpod::InpodConfig;
use ztunnel::{DnsConfig, PodPorts, ProxyConfig};

/// The node proxy of the mesh.
#[derive(Debug, Parser)]
#[command(name = "ztunnel", version)]
pub(crate) struct Flags {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Trust domain of pod identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Cluster DNS domain, for short service names.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The network this node is on.
    #[arg(long, env = "NETWORK", default_value = "")]
    network: String,
    /// The cluster's id (the first part of pod workload uids).
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// Connect to applications from their clients' addresses (Istio's
    /// `ENABLE_ORIG_SRC`); `false` connects from the pod's own address.
    #[arg(long, env = "ENABLE_ORIG_SRC", default_value_t = true, action = clap::ArgAction::Set)]
    preserve_source: bool,
    /// Control plane xDS address (host:port).
    #[arg(long, env = "XDS_ADDRESS", default_value = "istiod.istio-system.svc:15012")]
    xds_address: String,
    /// CA address (host:port); the xDS address when unset.
    #[arg(long, env = "CA_ADDRESS")]
    ca_address: Option<String>,
    /// Identity the control plane must prove.
    #[arg(
        long,
        env = "CONTROL_PLANE_IDENTITY",
        default_value = "spiffe://cluster.local/ns/istio-system/sa/controlplane"
    )]
    control_plane_identity: String,
    /// PEM file with the mesh's root certificates
    /// [default: /var/run/secrets/istio/root-cert.pem].
    #[arg(long, env = "ROOT_CERT")]
    root_cert: Option<PathBuf>,
    /// Istio's name for the roots (`XDS_ROOT_CA`, then `CA_ROOT_CA`), read
    /// when ROOT_CERT is not set, so Istio's ztunnel environment works as is.
    #[arg(long, env = "XDS_ROOT_CA", hide = true)]
    xds_root_ca: Option<PathBuf>,
    #[arg(long, env = "CA_ROOT_CA", hide = true)]
    ca_root_ca: Option<PathBuf>,
    /// File holding the bearer token for the CA (a bootstrap token locally,
    /// a projected service-account token in Kubernetes); when unset,
    /// Istio's `./var/run/secrets/tokens/istio-token` if it exists.
    #[arg(long, env = "CA_TOKEN_FILE")]
    ca_token_file: Option<PathBuf>,
    /// Requested certificate lifetime, in seconds.
    #[arg(long, env = "CERT_LIFETIME_SECONDS", default_value = "86400")]
    cert_lifetime_seconds: u64,
    /// The node agent's ZDS socket [default: /var/run/ztunnel/ztunnel.sock].
    #[arg(long, env = "ZDS_SOCKET")]
    zds_socket: Option<PathBuf>,
    /// Istio's name for the ZDS socket, read when ZDS_SOCKET is not set.
    #[arg(long, env = "INPOD_UDS", hide = true)]
    inpod_uds: Option<PathBuf>,
    /// Mark on ztunnel's own packets in pods (0 = none).
    #[arg(long, env = "SOCKET_MARK", default_value = "1337")]
    socket_mark: u32,
    /// Admin endpoint (keep it on localhost).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: String,
    /// Prometheus endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:15020")]
    metrics_addr: String,
    /// Readiness endpoint.
    #[arg(long, env = "READINESS_ADDR", default_value = "0.0.0.0:15021")]
    readiness_addr: String,
    /// Where DNS names the mesh does not know are forwarded; the first
    /// `nameserver` of /etc/resolv.conf when unset.
    #[arg(long, env = "DNS_UPSTREAM")]
    dns_upstream: Option<String>,
    /// Disable the per-pod DNS proxy.
    #[arg(long, env = "DNS_DISABLED")]
    dns_disabled: bool,
    /// How long connections may finish on shutdown or pod removal (seconds).
    #[arg(long, env = "DRAIN_DEADLINE_SECONDS", default_value = "30")]
    drain_deadline_seconds: u64,
    /// Tunnels one HBONE connection carries before another is opened to
    /// the same destination (each connection is one task: more connections
    /// spread one destination's traffic over more cores).
    #[arg(long, env = "POOL_MAX_STREAMS_PER_CONNECTION", default_value = "32")]
    pool_max_streams_per_connection: usize,
    /// How long a TLS session between proxies may be resumed after its full
    /// handshake, in seconds (up to 604800, TLS 1.3's limit); 0 turns
    /// resumption off, both the tickets pods' servers issue and their use.
    #[arg(long, env = "TLS_SESSION_TICKET_SECONDS", default_value_t = ztunnel::DEFAULT_SESSION_TICKET_LIFETIME.as_secs())]
    tls_session_ticket_seconds: u64,
    /// Tokio worker threads.
    #[arg(long, env = "WORKER_THREADS", default_value = "2")]
    worker_threads: usize,
    /// Log filter: a default level and/or `target=level` directives,
    /// comma-separated (`info,hbone=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

const DEFAULT_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";
const DEFAULT_ZDS_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";
/// Where Istio's ztunnel finds its token, relative to its working directory.
const ISTIO_TOKEN_PATH: &str = "./var/run/secrets/tokens/istio-token";

/// What `main` needs besides the application config.
pub(crate) struct Process {
    pub(crate) admin: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) readiness: SocketAddr,
    pub(crate) worker_threads: usize,
    pub(crate) log: Targets,
}

impl Flags {
    /// Checks every value; all problems at once.
    pub(crate) fn validate(self) -> Result<(AppConfig, Process), String> {
        let mut problems = Vec::new();
        let mut addr = |value: &str, name: &str| match resolve_addr(value) {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("  {name}={value:?}: {e}"));
                None
            }
        };
        // Istio writes these as URLs (`https://istiod.istio-system.svc:15012`);
        // the connection is always TLS, so the scheme says nothing more.
        let tls_endpoint = |v: &str| v.strip_prefix("https://").unwrap_or(v).to_string();
        let xds = addr(&tls_endpoint(&self.xds_address), "XDS_ADDRESS");
        let ca = addr(
            &tls_endpoint(self.ca_address.as_deref().unwrap_or(&self.xds_address)),
            "CA_ADDRESS",
        );
        let admin = addr(&self.admin_addr, "ADMIN_ADDR");
        let metrics = addr(&self.metrics_addr, "METRICS_ADDR");
        let readiness = addr(&self.readiness_addr, "READINESS_ADDR");
        let dns_upstream = match &self.dns_upstream {
            Some(v) => addr(v, "DNS_UPSTREAM"),
            None => resolv_conf_nameserver(),
        };
        let identity = match self.control_plane_identity.parse::<Identity>() {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(format!(
                    "  CONTROL_PLANE_IDENTITY={:?}: {e} (expected spiffe://<td>/ns/<ns>/sa/<sa>)",
                    self.control_plane_identity
                ));
                None
            }
        };
        let (root_var, root_cert) = match (&self.root_cert, &self.xds_root_ca, &self.ca_root_ca) {
            (Some(p), _, _) => ("ROOT_CERT", p.clone()),
            (None, Some(p), _) => ("XDS_ROOT_CA", p.clone()),
            (None, None, Some(p)) => ("CA_ROOT_CA", p.clone()),
            (None, None, None) => ("ROOT_CERT", PathBuf::from(DEFAULT_ROOT_CERT)),
        };
        let roots = match std::fs::read_to_string(&root_cert) {
            Ok(pem) => match TrustBundle::from_pem(&pem) {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.push(format!("  {root_var}={}: {e}", root_cert.display()));
                    None
                }
            },
            Err(e) => {
                problems.push(format!("  {root_var}={}: cannot read: {e}", root_cert.display()));
                None
            }
        };
        // Istio's ztunnel reads its token from this path, relative to its
        // working directory.
        let ca_token_file = self.ca_token_file.clone().or_else(|| {
            let istio = PathBuf::from(ISTIO_TOKEN_PATH);
            istio.exists().then_some(istio)
        });
        let zds_socket = self
            .zds_socket
            .clone()
            .or_else(|| self.inpod_uds.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ZDS_SOCKET));
        if self.node_name.trim().is_empty() {
            problems.push("  NODE_NAME: must not be empty".into());
        }
        if self.pool_max_streams_per_connection == 0 {
            problems.push("  POOL_MAX_STREAMS_PER_CONNECTION=0: need at least 1".into());
        }
        if self.tls_session_ticket_seconds > hbone::tls::MAX_TICKET_LIFETIME.as_secs() {
            problems.push(format!(
                "  TLS_SESSION_TICKET_SECONDS={}: at most {} (7 days) expected, or 0 for no resumption",
                self.tls_session_ticket_seconds,
                hbone::tls::MAX_TICKET_LIFETIME.as_secs()
            ));
        }
        if self.worker_threads == 0 {
            problems.push("  WORKER_THREADS=0: need at least 1".into());
        }
        let log = match parse_log_filter(&self.log) {
            Ok(targets) => Some(targets),
            Err(e) => {
                problems.push(format!("  RUST_LOG={:?}: {e}", self.log));
                None
            }
        };
        if self.cert_lifetime_seconds < 60 {
            problems.push(format!(
                "  CERT_LIFETIME_SECONDS={}: at least 60 expected",
                self.cert_lifetime_seconds
            ));
        }
        let (
            Some(xds),
            Some(ca),
            Some(admin),
            Some(metrics),
            Some(readiness),
            Some(identity),
            Some(roots),
            Some(log),
            true,
        ) = (xds, ca, admin, metrics, readiness, identity, roots, log, problems.is_empty())
        else {
            return Err(problems.join("\n"));
        };
        let session_ticket_lifetime = (self.tls_session_ticket_seconds > 0)
            .then(|| Duration::from_secs(self.tls_session_ticket_seconds));
        let config = AppConfig {
            node_name: self.node_name,
            proxy: ProxyConfig {
                trust_domain: self.trust_domain,
                network: self.network,
                cluster_id: self.cluster_id,
                preserve_source: self.preserve_source,
                ports: PodPorts::default(),
                peer_hbone_port: PodPorts::default().hbone,
                connect_timeout: Duration::from_secs(10),
                drain_deadline: Duration::from_secs(self.drain_deadline_seconds),
                dns: DnsConfig {
                    enabled: !self.dns_disabled,
                    upstream: dns_upstream,
                    upstream_timeout: Duration::from_secs(5),
                    cluster_domain: self.cluster_domain,
                },
                pool: hbone::PoolConfig {
                    max_streams_per_connection: self.pool_max_streams_per_connection,
                    ..hbone::PoolConfig::default()
                },
                session_ticket_lifetime,
            },
            control_plane: ControlPlaneConfig {
                xds,
                ca,
                identity,
                roots,
                token_file: ca_token_file,
                cert_lifetime: Duration::from_secs(self.cert_lifetime_seconds),
            },
            inpod: InpodConfig {
                socket: zds_socket,
                mark: (self.socket_mark != 0).then_some(self.socket_mark),
            },
        };
        let process =
            Process { admin, metrics, readiness, worker_threads: self.worker_threads, log };
        Ok((config, process))
    }
}

fn resolv_conf_nameserver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| {
        let ip = line.trim().strip_prefix("nameserver")?.trim();
        ip.parse().ok().map(|ip| SocketAddr::new(ip, 53))
    })
}
