//! The waypoint: the mesh's destination-side L7 proxy.
//!
//! - [`inbound`]: HBONE on 15008, accepting tunnels only to what this
//!   waypoint fronts, each handed to the `l7` engine;
//! - [`upstream`]: HBONE tunnels on to the chosen endpoint, with the
//!   waypoint's own identity;
//! - [`view`]: what the engine sees of the mesh (WDS services and
//!   workloads, and the routes);
//! - [`routes`]: `mesh.l7.ServiceRoutes` from the control plane;
//! - [`policies`]: `mesh.l7.Authorization` from the control plane (the
//!   AuthorizationPolicies attached to this waypoint and what it fronts);
//! - [`app`]: the assembled process (xDS, certificates, listeners, admin).
//!
//! HTTP itself (routing, retries, timeouts, faults, telemetry) is the `l7`
//! crate's, shared with the sidecar, and so is the evaluation of
//! AuthorizationPolicies; the destination's ztunnel still decides who may
//! reach a pod at L4, and refuses whatever did not come through its
//! waypoint.

pub mod app;
pub mod inbound;
pub mod policies;
pub mod routes;
pub mod upstream;
pub mod view;

use std::sync::Arc;

use hbone::{H2Settings, Pool, PoolConfig, TcpDialer};
use l7::EngineSettings;
use mesh_core::Identity;
use prometheus_client::registry::Registry;
use proxy_core::certificates::{CertificateLease, WorkloadCertificates};
use proxy_core::store::WorkloadStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::inbound::{WaypointEngine, WaypointHandler, WaypointName};
use crate::policies::PolicyStore;
use crate::routes::RoutesStore;
use crate::upstream::HboneConnector;
use crate::view::MeshView;

/// What a waypoint is made of, before it serves.
pub struct Parts {
    /// Which waypoint.
    pub me: WaypointName,
    /// Its identity.
    pub identity: Identity,
    /// The network it is on.
    pub network: String,
    /// Pods' HBONE port.
    pub hbone_port: u16,
    /// Workloads and services.
    pub store: Arc<WorkloadStore>,
    /// Routes.
    pub routes: Arc<RoutesStore>,
    /// Authorization policies.
    pub policies: Arc<PolicyStore>,
    /// Certificates.
    pub certs: Arc<WorkloadCertificates>,
    /// Engine limits.
    pub settings: EngineSettings,
    /// HBONE connections (both ways) hold small writes until the end of
    /// their task's turn (`H2Settings::coalesce_writes`).
    pub coalesce_writes: bool,
}

/// A running waypoint's shared state.
pub struct Waypoint {
    /// The engine.
    pub engine: Arc<WaypointEngine>,
    /// Who it is.
    pub me: WaypointName,
    /// Its identity.
    pub identity: Identity,
    /// Certificates.
    pub certs: Arc<WorkloadCertificates>,
    network: String,
    h2: H2Settings,
    _lease: CertificateLease,
}

impl Waypoint {
    /// Builds the engine and starts keeping the waypoint's certificate.
    pub fn new(parts: Parts, registry: &mut Registry) -> Arc<Self> {
        let lease = parts.certs.acquire(&parts.identity);
        let h2 = H2Settings { coalesce_writes: parts.coalesce_writes, ..H2Settings::default() };
        let pool = PoolConfig { h2: h2.clone(), ..PoolConfig::default() };
        let connector = HboneConnector {
            store: parts.store.clone(),
            certs: parts.certs.clone(),
            identity: parts.identity.clone(),
            pool: Pool::new(pool, Arc::new(TcpDialer)),
            hbone_port: parts.hbone_port,
        };
        let view = MeshView { store: parts.store, routes: parts.routes, policies: parts.policies };
        let engine = l7::Engine::new(connector, view, parts.settings, registry);
        Arc::new(Self {
            engine,
            me: parts.me,
            identity: parts.identity,
            certs: parts.certs,
            network: parts.network,
            h2,
            _lease: lease,
        })
    }

    /// Serves HBONE on `listener` once the certificate is there, swapping
    /// it on every rotation, until `stop`.
    pub async fn serve_hbone(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let Some(certs) = self.certs.watch(&self.identity) else { return };
        let handler = Arc::new(WaypointHandler {
            engine: self.engine.clone(),
            me: self.me.clone(),
            network: self.network.clone(),
        });
        let configs = hbone::tls::ServerConfigs::new(None);
        proxy_core::certificates::serve_hbone(
            certs,
            &configs,
            handler,
            self.h2.clone(),
            listener,
            stop,
        )
        .await;
    }
}
