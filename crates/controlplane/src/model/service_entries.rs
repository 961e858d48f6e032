//! ServiceEntries: services outside (or added to) the mesh.
//!
//! Each host becomes a service (`namespace/host`) with the entry's VIPs and
//! ports; each endpoint with an IP becomes a workload outside the mesh
//! (plain TCP, not HBONE) backing those services.

use std::net::IpAddr;

use mesh_core::{
    Identity, NamespacedHostname, NetworkAddress, NetworkMode, PortMapping, Service,
    TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::{MeshConfig, Warning};
use crate::config::{ClusterState, ObjectRef};

/// Services and endpoint workloads of every ServiceEntry.
pub fn translate(
    state: &ClusterState,
    mesh: &MeshConfig,
    warnings: &mut Vec<Warning>,
) -> (Vec<Service>, Vec<Workload>) {
    let mut services = Vec::new();
    let mut workloads = Vec::new();
    for ((namespace, name), entry) in &state.service_entries {
        let object = ObjectRef {
            kind: "ServiceEntry".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let mut warn = |message: String| warnings.push(Warning { object: object.clone(), message });
        let spec = &entry.spec;
        if spec.hosts.is_empty() {
            warn("has no hosts; skipped".into());
            continue;
        }
        if spec.workload_selector.is_some() {
            warn("workloadSelector is not supported yet; only static endpoints are used".into());
        }
        let mut vips = Vec::new();
        for address in &spec.addresses {
            match address.parse::<IpAddr>() {
                Ok(ip) => vips.push(NetworkAddress { network: String::new(), address: ip }),
                Err(_) => warn(format!(
                    "address {address:?} is not an IP (CIDRs are not supported); ignored"
                )),
            }
        }
        let ports: Vec<PortMapping> = spec
            .ports
            .iter()
            .filter(|p| p.number != 0)
            .map(|p| PortMapping {
                service_port: p.number,
                target_port: p.target_port.unwrap_or(p.number),
            })
            .collect();
        let keys: Vec<NamespacedHostname> = spec
            .hosts
            .iter()
            .map(|h| NamespacedHostname { namespace: namespace.clone(), hostname: h.clone() })
            .collect();
        for key in &keys {
            services.push(Service {
                name: name.clone(),
                namespace: namespace.clone(),
                hostname: key.hostname.clone(),
                vips: vips.clone(),
                ports: ports.clone(),
                subject_alt_names: Vec::new(),
                // `istio.io/use-waypoint` on the entry or its namespace, as
                // for a Service.
                waypoint: super::workloads::waypoint(
                    &entry.labels,
                    &state.namespace_labels(namespace),
                    namespace,
                    mesh,
                ),
                load_balancing: None,
                ip_families: Default::default(),
                canonical: true,
            });
        }
        for (index, endpoint) in spec.endpoints.iter().enumerate() {
            let Ok(ip) = endpoint.address.parse::<IpAddr>() else {
                warn(format!(
                    "endpoint {index} address {:?} is not an IP (DNS endpoints are not supported yet); ignored",
                    endpoint.address
                ));
                continue;
            };
            let sa = endpoint.service_account.clone().unwrap_or_else(|| "default".into());
            let identity = match Identity::new(&mesh.trust_domain, namespace, &sa) {
                Ok(identity) => identity,
                Err(e) => {
                    warn(format!("endpoint {index}: invalid service account: {e}; ignored"));
                    continue;
                }
            };
            let endpoint_ports: Vec<PortMapping> = spec
                .ports
                .iter()
                .filter(|p| p.number != 0)
                .map(|p| PortMapping {
                    service_port: p.number,
                    target_port: endpoint
                        .ports
                        .get(&p.name)
                        .copied()
                        .unwrap_or(p.target_port.unwrap_or(p.number)),
                })
                .collect();
            workloads.push(Workload {
                uid: format!(
                    "{}/networking.istio.io/ServiceEntry/{namespace}/{name}/{ip}",
                    mesh.cluster_id
                ),
                name: name.clone(),
                namespace: namespace.clone(),
                addresses: vec![ip],
                hostname: String::new(),
                network: endpoint.network.clone().unwrap_or_default(),
                protocol: TunnelProtocol::None,
                identity,
                waypoint: None,
                network_gateway: None,
                node: String::new(),
                canonical_name: name.clone(),
                canonical_revision: "latest".into(),
                workload_type: WorkloadType::Pod,
                workload_name: name.clone(),
                native_tunnel: false,
                services: keys.iter().map(|k| (k.clone(), endpoint_ports.clone())).collect(),
                authorization_policies: Vec::new(),
                status: WorkloadStatus::Healthy,
                cluster_id: mesh.cluster_id.clone(),
                locality: None,
                network_mode: NetworkMode::Standard,
                capacity: 1,
            });
        }
    }
    (services, workloads)
}
