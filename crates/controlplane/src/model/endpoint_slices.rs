//! EndpointSlices of Services without a selector: their endpoints join the
//! service (pods in the mesh get the service added; other addresses become
//! workloads outside the mesh).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_core::{
    Identity, NamespacedHostname, NetworkMode, PortMapping, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType,
};

use super::MeshConfig;
use crate::config::ClusterState;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Adds selector-less services' endpoints to `workloads`.
pub fn apply(state: &ClusterState, mesh: &MeshConfig, workloads: &mut Vec<Workload>) {
    let mut by_address: BTreeMap<(String, IpAddr), usize> = BTreeMap::new();
    for (i, w) in workloads.iter().enumerate() {
        for ip in &w.addresses {
            by_address.insert((w.namespace.clone(), *ip), i);
        }
    }
    let mut outside = Vec::new();
    for ((namespace, slice_name), slice) in &state.endpoint_slices {
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        let Some(service_name) = labels.get(SERVICE_NAME_LABEL) else { continue };
        let Some(service) = state.services.get(&(namespace.clone(), service_name.clone())) else {
            continue;
        };
        let Some(spec) = &service.spec else { continue };
        if spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
            // Selector services are built from pods directly.
            continue;
        }
        // Service ports matched to the slice's ports by name.
        let ports: Vec<PortMapping> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let service_port = u16::try_from(sp.port).ok().filter(|p| *p != 0)?;
                let target = slice.ports.iter().flatten().find(|p| p.name == sp.name)?.port?;
                Some(PortMapping { service_port, target_port: u16::try_from(target).ok()? })
            })
            .collect();
        let key = NamespacedHostname {
            namespace: namespace.clone(),
            hostname: format!("{service_name}.{namespace}.svc.{}", mesh.cluster_domain),
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else { continue };
                match by_address.get(&(namespace.clone(), ip)) {
                    Some(&i) => {
                        workloads[i].services.insert(key.clone(), ports.clone());
                    }
                    None => {
                        let Ok(identity) = Identity::new(&mesh.trust_domain, namespace, "default")
                        else {
                            continue;
                        };
                        outside.push(Workload {
                            uid: format!(
                                "{}/discovery.k8s.io/EndpointSlice/{namespace}/{slice_name}/{ip}",
                                mesh.cluster_id
                            ),
                            name: slice_name.clone(),
                            namespace: namespace.clone(),
                            addresses: vec![ip],
                            hostname: String::new(),
                            network: String::new(),
                            protocol: TunnelProtocol::None,
                            identity,
                            waypoint: None,
                            network_gateway: None,
                            node: endpoint.node_name.clone().unwrap_or_default(),
                            canonical_name: service_name.clone(),
                            canonical_revision: "latest".into(),
                            workload_type: WorkloadType::Pod,
                            workload_name: service_name.clone(),
                            native_tunnel: false,
                            services: [(key.clone(), ports.clone())].into(),
                            authorization_policies: Vec::new(),
                            status: if ready {
                                WorkloadStatus::Healthy
                            } else {
                                WorkloadStatus::Unhealthy
                            },
                            cluster_id: mesh.cluster_id.clone(),
                            locality: None,
                            network_mode: NetworkMode::Standard,
                            capacity: 1,
                        });
                    }
                }
            }
        }
    }
    workloads.extend(outside);
}
