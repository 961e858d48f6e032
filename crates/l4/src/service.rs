//! Which service an inbound connection was addressed to, for telemetry.
//!
//! The client's proxy resolved the service to one of this pod's addresses
//! before the connection arrived, so the destination side infers it as
//! Istio's ztunnel does: among the services this pod is an endpoint of, the
//! first (in key order) that forwards to the target port, skipping services
//! the caller itself backs (a pod calling a peer of its own service would
//! otherwise be reported as calling itself). Telemetry only: nothing is
//! decided by it.

use std::sync::Arc;

use mesh_core::{Service, Workload};
use proxy_core::store::WorkloadStore;

/// The service a connection to `destination` on `port` from `source` most
/// likely addressed.
pub fn addressed_service(
    store: &WorkloadStore,
    destination: &Workload,
    port: u16,
    source: Option<&Workload>,
) -> Option<Arc<Service>> {
    destination
        .services
        .iter()
        .filter(|(key, _)| source.is_none_or(|s| !s.services.contains_key(*key)))
        .find_map(|(key, ports)| {
            let service = store.service(key)?;
            // The workload's own mapping wins; a target port it leaves
            // unknown (0) is the service's.
            let forwards = ports
                .iter()
                .chain(&service.ports)
                .any(|m| m.target_port == port || (m.target_port == 0 && m.service_port == port));
            forwards.then_some(service)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_core::Address;
    use testkit::model::{service, workload};

    use super::*;

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_service_forwarding_to_the_port_not_the_callers_own() {
        let store = WorkloadStore::new();
        for s in [
            service("api", "apps", ip("10.96.0.1"), &[(80, 8080)]),
            service("admin", "apps", ip("10.96.0.2"), &[(9000, 9090)]),
            service("peers", "apps", ip("10.96.0.3"), &[(8080, 8080)]),
        ] {
            store.insert(Address::Service(Box::new(s.build())));
        }
        let db = workload("api-1", "apps", ip("10.0.1.9"))
            .endpoint_of("apps/admin.apps.svc.cluster.local", &[(9000, 9090)])
            .endpoint_of("apps/api.apps.svc.cluster.local", &[(80, 8080)])
            .endpoint_of("apps/peers.apps.svc.cluster.local", &[(8080, 0)])
            .build();
        let caller = workload("web", "apps", ip("10.0.1.5")).build();
        let name =
            |port, source| addressed_service(&store, &db, port, source).map(|s| s.name.clone());
        assert_eq!(name(9090, Some(&caller)).as_deref(), Some("admin"));
        assert_eq!(name(8080, Some(&caller)).as_deref(), Some("api"), "first in key order");
        assert_eq!(name(22, Some(&caller)), None, "no service forwards there");
        // A peer of `api` calling it on 8080: `api` is its own service.
        let peer = workload("api-2", "apps", ip("10.0.1.7"))
            .endpoint_of("apps/api.apps.svc.cluster.local", &[(80, 8080)])
            .build();
        assert_eq!(name(8080, Some(&peer)).as_deref(), Some("peers"));
        assert_eq!(name(8080, None).as_deref(), Some("api"), "plaintext from outside");
    }
}
