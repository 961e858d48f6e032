//! The engine's view of the mesh from inside the waypoint: services and
//! workloads from WDS (only what this waypoint fronts and forwards to),
//! routes from `ServiceRoutes`, policies from `mesh.l7.Authorization`.

use std::net::SocketAddr;
use std::sync::Arc;

use l7::balance::Endpoint;
use l7::metrics::Peer;
use l7::policies::Applicable;
use l7::{Destinations, ServiceRoutes, Target};
use mesh_core::{NamespacedHostname, Workload, WorkloadStatus};
use proxy_core::store::WorkloadStore;

use crate::policies::PolicyStore;
use crate::routes::RoutesStore;

/// Workload store plus routes.
#[derive(Debug, Clone)]
pub struct MeshView {
    /// Workloads and services.
    pub store: Arc<WorkloadStore>,
    /// Routes.
    pub routes: Arc<RoutesStore>,
    /// Authorization policies.
    pub policies: Arc<PolicyStore>,
}

/// `namespace/hostname` → the store's key.
pub fn service_key(name: &str) -> Option<NamespacedHostname> {
    let (namespace, hostname) = name.split_once('/')?;
    Some(NamespacedHostname { namespace: namespace.to_string(), hostname: hostname.to_string() })
}

/// How the metrics name a workload.
pub fn peer_of(w: &Workload) -> Peer {
    Peer {
        workload: if w.workload_name.is_empty() { w.name.clone() } else { w.workload_name.clone() },
        namespace: w.namespace.clone(),
        principal: w.identity.to_string(),
        canonical_service: w.canonical_name.clone(),
        canonical_revision: w.canonical_revision.clone(),
    }
}

impl Destinations for MeshView {
    fn routes(&self, service: &str) -> Option<Arc<ServiceRoutes>> {
        self.routes.get(service)
    }

    fn endpoints(&self, service: &str, port: u16, workloads: Option<&[String]>) -> Vec<Endpoint> {
        let Some(key) = service_key(service) else { return Vec::new() };
        let Some(svc) = self.store.service(&key) else { return Vec::new() };
        let declared = svc.ports.iter().find(|p| p.service_port == port);
        if declared.is_none() && !svc.ports.is_empty() {
            return Vec::new();
        }
        self.store
            .endpoints(&key)
            .into_iter()
            .filter(|e| e.workload.status == WorkloadStatus::Healthy)
            .filter(|e| e.ports.is_empty() || e.ports.iter().any(|p| p.service_port == port))
            .filter(|e| workloads.is_none_or(|w| w.contains(&e.workload.uid)))
            .filter_map(|e| {
                let ip = *e.workload.addresses.first()?;
                let target = e
                    .ports
                    .iter()
                    .find(|p| p.service_port == port && p.target_port != 0)
                    .or(declared.filter(|p| p.target_port != 0))
                    .map_or(port, |p| p.target_port);
                Some(Endpoint {
                    uid: e.workload.uid.as_str().into(),
                    address: SocketAddr::new(ip, target),
                })
            })
            .collect()
    }

    fn describe(&self, uid: &str) -> Peer {
        self.store.workload(uid).map(|w| peer_of(&w)).unwrap_or_default()
    }

    fn authorization(&self, target: &Target) -> Arc<Applicable> {
        self.policies.applicable(target)
    }
}
