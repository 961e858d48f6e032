//! The whole node proxy assembled: xDS client, CA client, per-pod proxies
//! driven by ZDS, and the admin, metrics and readiness endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hbone::TrustBundle;
use mesh_core::Identity;
use mesh_proto::core::Node;
use mesh_proto::node_metadata;
use prometheus_client::registry::Registry;
use prost_types::{Struct, Value, value::Kind};
use proxy_core::certificates::{CertificateSettings, GrpcCa, WorkloadCertificates};
use proxy_core::readiness::Readiness;
use proxy_core::store::{AddressHandler, AuthorizationHandler, WorkloadStore};
use proxy_core::tcp_metrics::TcpMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use xds::{XdsClient, XdsClientConfig};

use crate::admin::{AdminRoute, SetLogLevel};
use crate::inpod::netns::HostNetns;
use crate::inpod::{self, InpodConfig};
use crate::{ProxyConfig, Shared, Ztunnel};

const ZDS_READY: &str = "node agent snapshot";

/// Where the control plane is and how it is trusted.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// xDS (delta ADS) address.
    pub xds: SocketAddr,
    /// CA address.
    pub ca: SocketAddr,
    /// The identity the control plane must prove.
    pub identity: Identity,
    /// Roots: the mesh's trust bundle.
    pub roots: TrustBundle,
    /// Bearer token file for the CA (read on every request).
    pub token_file: Option<PathBuf>,
    /// Requested certificate lifetime.
    pub cert_lifetime: Duration,
}

/// Everything the binary decides.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// This node's name (xDS node id, CA authorization).
    pub node_name: String,
    /// Per-pod proxy settings.
    pub proxy: ProxyConfig,
    /// The control plane.
    pub control_plane: ControlPlaneConfig,
    /// The node agent's socket and the packet mark.
    pub inpod: InpodConfig,
}

/// The bound listeners of the three HTTP endpoints.
#[derive(Debug)]
pub struct AppListeners {
    /// Admin (localhost).
    pub admin: TcpListener,
    /// Prometheus.
    pub metrics: TcpListener,
    /// Readiness.
    pub readiness: TcpListener,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The xDS/CA TLS configuration could not be built.
    #[error("cannot build the TLS configuration for the control plane")]
    Tls(#[source] hbone::TlsError),
    /// The current network namespace could not be opened.
    #[error("cannot open this process's network namespace")]
    Netns(#[source] std::io::Error),
}

/// Runs until `shutdown`, then drains.
pub async fn run(
    config: AppConfig,
    listeners: AppListeners,
    set_log_level: Option<SetLogLevel>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let cp = &config.control_plane;
    let tls = hbone::tls::client_config_without_cert(&cp.roots, std::slice::from_ref(&cp.identity))
        .map_err(AppError::Tls)?;
    let host = HostNetns::current().map_err(AppError::Netns)?;

    let readiness = Readiness::new();
    let xds_ready = readiness.block("xds");
    let zds_ready = readiness.block(ZDS_READY);

    let store = WorkloadStore::new();
    let node = Node {
        id: format!("ztunnel~{}", config.node_name),
        cluster: String::new(),
        metadata: Some(Struct {
            fields: [
                (node_metadata::PROXY_TYPE.to_string(), string("ztunnel")),
                (node_metadata::NODE_NAME.to_string(), string(&config.node_name)),
                // We evaluate dry-run policies without enforcing them.
                (node_metadata::DRY_RUN_AUTHORIZATION.to_string(), string("true")),
            ]
            .into(),
        }),
        ..Default::default()
    };
    let xds_client = XdsClient::new(
        xds::tls_channel(cp.xds, tls.clone()),
        XdsClientConfig { node, ..Default::default() },
        vec![
            Box::new(AddressHandler(store.clone())),
            Box::new(AuthorizationHandler(store.clone())),
        ],
    );
    proxy_core::admin::run_xds(xds_client, xds_ready, &shutdown);

    let provider = GrpcCa::new(
        xds::tls_channel(cp.ca, tls),
        cp.roots.clone(),
        cp.token_file.clone(),
        cp.cert_lifetime,
        true,
    );
    let certs = WorkloadCertificates::new(Arc::new(provider), CertificateSettings::default());
    let mut registry = Registry::default();
    let metrics = TcpMetrics::register(&mut registry);
    let shared = Shared::new(store, certs, metrics, config.proxy.clone());
    let ztunnel = Ztunnel::new(shared);
    // Ready once the pods handed over so far hold certificates.
    let certs_ready = readiness.block("certificates");
    tokio::spawn({
        let readiness = readiness.clone();
        let ztunnel = ztunnel.clone();
        async move {
            loop {
                let snapshot_in = !readiness.pending().iter().any(|p| p == ZDS_READY);
                if snapshot_in && ztunnel.shared().certs.pending() == 0 {
                    drop(certs_ready);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let endpoints = proxy_core::admin::Endpoints {
        admin: listeners.admin,
        metrics: listeners.metrics,
        readiness: listeners.readiness,
    };
    let admin = AdminRoute::new(ztunnel.clone(), set_log_level);
    proxy_core::admin::serve_endpoints(endpoints, admin, registry, readiness, &shutdown);
    tokio::spawn(inpod::run(
        ztunnel.clone(),
        config.inpod,
        host,
        Some(zds_ready),
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    info!(deadline = ?config.proxy.drain_deadline, "shutting down: draining connections");
    let cut = ztunnel.shutdown().await;
    info!(cut, "drained");
    Ok(())
}

fn string(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}
