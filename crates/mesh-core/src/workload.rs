//! Workloads: pods, VMs and ServiceEntry endpoints, as the data plane sees them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_proto::workload as pb;

use crate::Identity;
use crate::address::{GatewayAddress, NamespacedHostname, PortMapping};
use crate::convert::{self, ConvertError};

/// Trust domain assumed when a workload does not name one.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Service account assumed when a workload does not name one.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One endpoint of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Globally unique; the xDS resource name.
    pub uid: String,
    /// Pod (or VM) name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Its IPs; empty for workloads reached by `hostname`.
    pub addresses: Vec<IpAddr>,
    /// DNS name, for workloads without addresses.
    pub hostname: String,
    /// Network; empty for the default one.
    pub network: String,
    /// How to reach it: HBONE when it is captured by the mesh.
    pub protocol: TunnelProtocol,
    /// Its SPIFFE identity.
    pub identity: Identity,
    /// The waypoint all its inbound traffic must cross.
    pub waypoint: Option<GatewayAddress>,
    /// The gateway that reaches it from other networks.
    pub network_gateway: Option<GatewayAddress>,
    /// Node it runs on.
    pub node: String,
    /// For telemetry: `app.kubernetes.io/name` or equivalent.
    pub canonical_name: String,
    /// For telemetry: `app.kubernetes.io/version` or equivalent.
    pub canonical_revision: String,
    /// For telemetry: the kind of its owner.
    pub workload_type: WorkloadType,
    /// For telemetry: its owner's name (Deployment, Job...).
    pub workload_name: String,
    /// It takes tunnelled traffic itself (waypoints).
    pub native_tunnel: bool,
    /// Services it backs, with their ports as it serves them.
    pub services: BTreeMap<NamespacedHostname, Vec<PortMapping>>,
    /// Selector-scoped policies applying to it (`namespace/name`).
    pub authorization_policies: Vec<String>,
    /// Ready or not.
    pub status: WorkloadStatus,
    /// Cluster it belongs to.
    pub cluster_id: String,
    /// Where it runs.
    pub locality: Option<Locality>,
    /// Whether its address is its own.
    pub network_mode: NetworkMode,
    /// Relative capacity for load balancing (default 1).
    pub capacity: u32,
}

/// How traffic reaches a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunnelProtocol {
    /// Plain TCP (not in the mesh).
    #[default]
    None,
    /// HBONE to port 15008.
    Hbone,
}

/// Whether a workload serves traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WorkloadStatus {
    /// Ready.
    #[default]
    Healthy,
    /// Not ready.
    Unhealthy,
}

/// The kind of a workload's owner, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WorkloadType {
    /// A Deployment (or ReplicaSet, StatefulSet, DaemonSet).
    #[default]
    Deployment,
    /// A CronJob.
    CronJob,
    /// A bare pod.
    Pod,
    /// A Job.
    Job,
}

/// Whether a workload's address is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// It is.
    #[default]
    Standard,
    /// It shares the node's address: never look it up by address.
    HostNetwork,
}

/// Region, zone and subzone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Subzone.
    pub subzone: String,
}

// === impl Workload ===

impl Workload {
    /// The key services and policies refer to it by.
    pub fn key(&self) -> &str {
        &self.uid
    }
}

impl TryFrom<&pb::Workload> for Workload {
    type Error = ConvertError;

    fn try_from(p: &pb::Workload) -> Result<Self, Self::Error> {
        if p.uid.is_empty() {
            return Err(ConvertError::Missing("workload.uid"));
        }
        if p.addresses.is_empty() && p.hostname.is_empty() {
            return Err(ConvertError::Missing("workload.addresses or workload.hostname"));
        }
        let addresses = p
            .addresses
            .iter()
            .map(|a| convert::ip_from_bytes("workload.addresses", a))
            .collect::<Result<_, _>>()?;
        let or =
            |s: &str, default: &'static str| if s.is_empty() { default } else { s }.to_string();
        if p.namespace.is_empty() {
            return Err(ConvertError::Missing("workload.namespace"));
        }
        let identity = Identity::new(
            &or(&p.trust_domain, DEFAULT_TRUST_DOMAIN),
            &p.namespace,
            &or(&p.service_account, DEFAULT_SERVICE_ACCOUNT),
        )
        .map_err(ConvertError::Identity)?;
        let gateway = |field, g: &Option<pb::GatewayAddress>| {
            g.as_ref().map(|g| GatewayAddress::from_proto(field, g)).transpose()
        };
        let mut services = BTreeMap::new();
        for (key, ports) in &p.services {
            let key: NamespacedHostname = key.parse()?;
            let ports =
                ports.ports.iter().map(PortMapping::from_proto).collect::<Result<_, _>>()?;
            services.insert(key, ports);
        }
        Ok(Self {
            uid: p.uid.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            addresses,
            hostname: p.hostname.clone(),
            network: p.network.clone(),
            protocol: match convert::enumeration("workload.tunnel_protocol", p.tunnel_protocol)? {
                pb::TunnelProtocol::None => TunnelProtocol::None,
                pb::TunnelProtocol::Hbone => TunnelProtocol::Hbone,
            },
            identity,
            waypoint: gateway("workload.waypoint", &p.waypoint)?,
            network_gateway: gateway("workload.network_gateway", &p.network_gateway)?,
            node: p.node.clone(),
            canonical_name: p.canonical_name.clone(),
            canonical_revision: p.canonical_revision.clone(),
            workload_type: match convert::enumeration("workload.workload_type", p.workload_type)? {
                pb::WorkloadType::Deployment => WorkloadType::Deployment,
                pb::WorkloadType::Cronjob => WorkloadType::CronJob,
                pb::WorkloadType::Pod => WorkloadType::Pod,
                pb::WorkloadType::Job => WorkloadType::Job,
            },
            workload_name: p.workload_name.clone(),
            native_tunnel: p.native_tunnel,
            services,
            authorization_policies: p.authorization_policies.clone(),
            status: match convert::enumeration("workload.status", p.status)? {
                pb::WorkloadStatus::Healthy => WorkloadStatus::Healthy,
                pb::WorkloadStatus::Unhealthy => WorkloadStatus::Unhealthy,
            },
            cluster_id: p.cluster_id.clone(),
            locality: p.locality.as_ref().map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            }),
            network_mode: match convert::enumeration("workload.network_mode", p.network_mode)? {
                pb::NetworkMode::Standard => NetworkMode::Standard,
                pb::NetworkMode::HostNetwork => NetworkMode::HostNetwork,
            },
            capacity: p.capacity.unwrap_or(1),
        })
    }
}

impl From<&Workload> for pb::Workload {
    fn from(d: &Workload) -> Self {
        Self {
            uid: d.uid.clone(),
            name: d.name.clone(),
            namespace: d.namespace.clone(),
            addresses: d.addresses.iter().map(convert::ip_to_bytes).collect(),
            hostname: d.hostname.clone(),
            network: d.network.clone(),
            tunnel_protocol: match d.protocol {
                TunnelProtocol::None => pb::TunnelProtocol::None,
                TunnelProtocol::Hbone => pb::TunnelProtocol::Hbone,
            } as i32,
            trust_domain: d.identity.trust_domain().to_string(),
            service_account: d.identity.service_account().to_string(),
            waypoint: d.waypoint.as_ref().map(Into::into),
            network_gateway: d.network_gateway.as_ref().map(Into::into),
            node: d.node.clone(),
            canonical_name: d.canonical_name.clone(),
            canonical_revision: d.canonical_revision.clone(),
            workload_type: match d.workload_type {
                WorkloadType::Deployment => pb::WorkloadType::Deployment,
                WorkloadType::CronJob => pb::WorkloadType::Cronjob,
                WorkloadType::Pod => pb::WorkloadType::Pod,
                WorkloadType::Job => pb::WorkloadType::Job,
            } as i32,
            workload_name: d.workload_name.clone(),
            native_tunnel: d.native_tunnel,
            application_tunnel: None,
            services: d
                .services
                .iter()
                .map(|(k, ports)| {
                    (k.to_string(), pb::PortList { ports: ports.iter().map(Into::into).collect() })
                })
                .collect(),
            authorization_policies: d.authorization_policies.clone(),
            status: match d.status {
                WorkloadStatus::Healthy => pb::WorkloadStatus::Healthy,
                WorkloadStatus::Unhealthy => pb::WorkloadStatus::Unhealthy,
            } as i32,
            cluster_id: d.cluster_id.clone(),
            locality: d.locality.as_ref().map(|l| pb::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            }),
            network_mode: match d.network_mode {
                NetworkMode::Standard => pb::NetworkMode::Standard,
                NetworkMode::HostNetwork => pb::NetworkMode::HostNetwork,
            } as i32,
            extensions: Vec::new(),
            capacity: Some(d.capacity),
        }
    }
}
