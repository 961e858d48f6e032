//! The `waypoint` binary: flags, logging, runtime, then `waypoint::app::run`.

mod alloc;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hbone::TrustBundle;
use mesh_core::Identity;
use proxy_core::process::{init_logging, parse_log_filter, resolve_addr, wait_for_signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;
use waypoint::app::{AppConfig, AppListeners, ControlPlaneConfig};
use waypoint::inbound::WaypointName;

/// The mesh's L7 proxy for the services and workloads bound to one
/// `istio-waypoint` Gateway.
#[derive(Debug, Parser)]
#[command(name = "waypoint", version)]
struct Flags {
    /// The Gateway's name.
    #[arg(long, env = "WAYPOINT_NAME")]
    name: String,
    /// The Gateway's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The waypoint's service account (its identity).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    service_account: String,
    /// This instance's IP address.
    #[arg(long, env = "INSTANCE_IP")]
    instance_ip: Option<IpAddr>,
    /// Trust domain.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// The network this waypoint is on.
    #[arg(long, env = "NETWORK", default_value = "")]
    network: String,
    /// Control plane xDS address (host:port).
    #[arg(long, env = "XDS_ADDRESS", default_value = "istiod.istio-system.svc:15012")]
    xds_address: String,
    /// CA address; the xDS address when unset.
    #[arg(long, env = "CA_ADDRESS")]
    ca_address: Option<String>,
    /// Identity the control plane must prove.
    #[arg(
        long,
        env = "CONTROL_PLANE_IDENTITY",
        default_value = "spiffe://cluster.local/ns/istio-system/sa/controlplane"
    )]
    control_plane_identity: String,
    /// PEM file with the mesh's roots.
    #[arg(long, env = "ROOT_CERT", default_value = "/var/run/secrets/istio/root-cert.pem")]
    root_cert: PathBuf,
    /// Bearer token file for the CA.
    #[arg(long, env = "CA_TOKEN_FILE")]
    ca_token_file: Option<PathBuf>,
    /// Ask the CA on behalf of the waypoint's identity with a node's token
    /// (the local mesh); in Kubernetes the waypoint's own token proves it.
    #[arg(long, env = "CA_IMPERSONATE")]
    ca_impersonate: bool,
    /// Requested certificate lifetime, seconds.
    #[arg(long, env = "CERT_LIFETIME_SECONDS", default_value = "86400")]
    cert_lifetime_seconds: u64,
    /// HBONE listener.
    #[arg(long, env = "HBONE_ADDR", default_value = "0.0.0.0:15008")]
    hbone_addr: String,
    /// Pods' HBONE port.
    #[arg(long, env = "POD_HBONE_PORT", default_value = "15008")]
    pod_hbone_port: u16,
    /// Admin endpoint (keep it on localhost).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: String,
    /// Prometheus endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:15020")]
    metrics_addr: String,
    /// Readiness endpoint.
    #[arg(long, env = "READINESS_ADDR", default_value = "0.0.0.0:15021")]
    readiness_addr: String,
    /// Tokio worker threads. One by default: measured against two, it
    /// served 45–97% more requests per CPU-second, and its memory under
    /// 1000 streams stayed under 32 MiB (docs/performance.md). Scale out
    /// with replicas, or raise this on a waypoint with cores to itself.
    #[arg(long, env = "WORKER_THREADS", default_value = "1")]
    worker_threads: usize,
    /// Hold small HBONE writes until the end of the connection task's turn,
    /// so many tunnels' frames leave in one TLS record and one `writev`
    /// (docs/performance.md has the measurements).
    #[arg(long, env = "COALESCE_WRITES", default_value = "true", action = clap::ArgAction::Set)]
    coalesce_writes: bool,
    /// Log filter (`info,l7=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

struct Process {
    hbone: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    readiness: SocketAddr,
    worker_threads: usize,
    log: Targets,
}

impl Flags {
    /// Checks every value; every problem at once.
    fn validate(self) -> Result<(AppConfig, Process), String> {
        let mut problems = Vec::new();
        let mut addr = |value: &str, name: &str| match resolve_addr(value) {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("  {name}={value:?}: {e}"));
                None
            }
        };
        let tls_endpoint = |v: &str| v.strip_prefix("https://").unwrap_or(v).to_string();
        let xds = addr(&tls_endpoint(&self.xds_address), "XDS_ADDRESS");
        let ca = addr(
            &tls_endpoint(self.ca_address.as_deref().unwrap_or(&self.xds_address)),
            "CA_ADDRESS",
        );
        let hbone = addr(&self.hbone_addr, "HBONE_ADDR");
        let admin = addr(&self.admin_addr, "ADMIN_ADDR");
        let metrics = addr(&self.metrics_addr, "METRICS_ADDR");
        let readiness = addr(&self.readiness_addr, "READINESS_ADDR");
        let cp_identity = self
            .control_plane_identity
            .parse::<Identity>()
            .map_err(|e| {
                problems.push(format!(
                    "  CONTROL_PLANE_IDENTITY={:?}: {e}",
                    self.control_plane_identity
                ))
            })
            .ok();
        let identity = Identity::new(&self.trust_domain, &self.namespace, &self.service_account)
            .map_err(|e| {
                problems.push(format!(
                    "  TRUST_DOMAIN/POD_NAMESPACE/SERVICE_ACCOUNT ({}/{}/{}): {e}",
                    self.trust_domain, self.namespace, self.service_account
                ))
            })
            .ok();
        let roots = match std::fs::read_to_string(&self.root_cert) {
            Ok(pem) => TrustBundle::from_pem(&pem)
                .map_err(|e| {
                    problems.push(format!("  ROOT_CERT={}: {e}", self.root_cert.display()))
                })
                .ok(),
            Err(e) => {
                problems
                    .push(format!("  ROOT_CERT={}: cannot read: {e}", self.root_cert.display()));
                None
            }
        };
        if self.name.trim().is_empty() {
            problems.push("  WAYPOINT_NAME: must not be empty".into());
        }
        if self.worker_threads == 0 {
            problems.push("  WORKER_THREADS: must be at least 1".into());
        }
        let log = parse_log_filter(&self.log)
            .map_err(|e| problems.push(format!("  RUST_LOG={:?}: {e}", self.log)))
            .ok();
        match (xds, ca, hbone, admin, metrics, readiness, cp_identity, identity, roots, log) {
            (
                Some(xds),
                Some(ca),
                Some(hbone),
                Some(admin),
                Some(metrics),
                Some(readiness),
                Some(cp_identity),
                Some(identity),
                Some(roots),
                Some(log),
            ) if problems.is_empty() => Ok((
                AppConfig {
                    me: WaypointName {
                        namespace: self.namespace,
                        name: self.name,
                        addresses: self.instance_ip.into_iter().collect(),
                    },
                    identity,
                    network: self.network,
                    hbone_port: self.pod_hbone_port,
                    control_plane: ControlPlaneConfig {
                        xds,
                        ca,
                        identity: cp_identity,
                        roots,
                        token_file: self.ca_token_file,
                        impersonate: self.ca_impersonate,
                        cert_lifetime: Duration::from_secs(self.cert_lifetime_seconds),
                    },
                    settings: l7::EngineSettings::default(),
                    coalesce_writes: self.coalesce_writes,
                },
                Process {
                    hbone,
                    admin,
                    metrics,
                    readiness,
                    worker_threads: self.worker_threads,
                    log,
                },
            )),
            _ => Err(problems.join("\n")),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let (config, process) = match Flags::parse().validate() {
        Ok(valid) => valid,
        Err(problems) => {
            eprintln!("waypoint: invalid configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    let set_log_level = init_logging(process.log);
    // One worker: a current-thread runtime, with no hand-off between the
    // thread that polls the network and the one that runs tasks, and tasks
    // run in the order they were woken, so one connection's writes gather
    // (`hbone/src/coalesce.rs`). It served 45% more HTTP/1.1 requests per
    // CPU-second than a multi-thread runtime with one worker (waybench).
    let runtime = if process.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(process.worker_threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let bind = |addr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {what} {addr}"))
        };
        let listeners = AppListeners {
            hbone: bind(process.hbone, "HBONE_ADDR").await?,
            admin: bind(process.admin, "ADMIN_ADDR").await?,
            metrics: bind(process.metrics, "METRICS_ADDR").await?,
            readiness: bind(process.readiness, "READINESS_ADDR").await?,
        };
        println!(
            "listening hbone={} admin={} metrics={} readiness={}",
            listeners.hbone.local_addr()?,
            listeners.admin.local_addr()?,
            listeners.metrics.local_addr()?,
            listeners.readiness.local_addr()?
        );
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                shutdown.cancel();
            }
        });
        waypoint::app::run(config, listeners, Some(set_log_level), shutdown)
            .await
            .context("waypoint failed")
    })
}
