//! Builders for workload-store contents: `workload("web", "apps", ip)`
//! gives an ambient pod with sensible defaults; chain what differs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_core::policy::{Action, Authorization, Clause, Match, PolicyScope, Rule};
use mesh_core::{
    GatewayAddress, GatewayDestination, Identity, IpFamilies, LoadBalancing, NamespacedHostname,
    NetworkAddress, NetworkMode, PortMapping, Service, TunnelProtocol, Workload, WorkloadStatus,
    WorkloadType,
};

/// An ambient (HBONE) pod named `name` in `namespace` at `ip`, service
/// account `default`, node `node-a`, healthy.
pub fn workload(name: &str, namespace: &str, ip: IpAddr) -> WorkloadBuilder {
    WorkloadBuilder(Workload {
        uid: format!("Kubernetes//Pod/{namespace}/{name}"),
        name: name.to_string(),
        namespace: namespace.to_string(),
        addresses: vec![ip],
        hostname: String::new(),
        network: String::new(),
        protocol: TunnelProtocol::Hbone,
        identity: Identity::new("cluster.local", namespace, "default").unwrap(),
        waypoint: None,
        network_gateway: None,
        node: "node-a".to_string(),
        canonical_name: name.to_string(),
        canonical_revision: "v1".to_string(),
        workload_type: WorkloadType::Deployment,
        workload_name: name.to_string(),
        native_tunnel: false,
        services: BTreeMap::new(),
        authorization_policies: Vec::new(),
        status: WorkloadStatus::Healthy,
        cluster_id: "Kubernetes".to_string(),
        locality: None,
        network_mode: NetworkMode::Standard,
        capacity: 1,
    })
}

/// Chains changes onto a [`Workload`].
#[derive(Debug, Clone)]
pub struct WorkloadBuilder(Workload);

impl WorkloadBuilder {
    /// Runs as this service account.
    pub fn service_account(mut self, sa: &str) -> Self {
        self.0.identity = Identity::new("cluster.local", &self.0.namespace, sa).unwrap();
        self
    }

    /// Not in the mesh: reached with plain TCP.
    pub fn plaintext(mut self) -> Self {
        self.0.protocol = TunnelProtocol::None;
        self
    }

    /// On this node.
    pub fn node(mut self, node: &str) -> Self {
        self.0.node = node.to_string();
        self
    }

    /// Not ready.
    pub fn unhealthy(mut self) -> Self {
        self.0.status = WorkloadStatus::Unhealthy;
        self
    }

    /// Behind the waypoint at `ip` (HBONE port 15008).
    pub fn waypoint(mut self, ip: IpAddr) -> Self {
        self.0.waypoint = Some(gateway(ip));
        self
    }

    /// An endpoint of `namespace/hostname`, mapping service → target ports.
    pub fn endpoint_of(mut self, service: &str, ports: &[(u16, u16)]) -> Self {
        self.0.services.insert(key(service), mappings(ports));
        self
    }

    /// Lists these policies (`namespace/name`) as selecting it.
    pub fn policies(mut self, keys: &[&str]) -> Self {
        self.0.authorization_policies = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    /// The workload.
    pub fn build(self) -> Workload {
        self.0
    }
}

/// A service `name.namespace.svc.cluster.local` with one VIP and these
/// service → target port pairs.
pub fn service(name: &str, namespace: &str, vip: IpAddr, ports: &[(u16, u16)]) -> ServiceBuilder {
    ServiceBuilder(Service {
        name: name.to_string(),
        namespace: namespace.to_string(),
        hostname: format!("{name}.{namespace}.svc.cluster.local"),
        vips: vec![NetworkAddress { network: String::new(), address: vip }],
        ports: mappings(ports),
        subject_alt_names: Vec::new(),
        waypoint: None,
        load_balancing: None,
        ip_families: IpFamilies::Automatic,
        canonical: true,
    })
}

/// Chains changes onto a [`Service`].
#[derive(Debug, Clone)]
pub struct ServiceBuilder(Service);

impl ServiceBuilder {
    /// Fronted by the waypoint at `ip`.
    pub fn waypoint(mut self, ip: IpAddr) -> Self {
        self.0.waypoint = Some(gateway(ip));
        self
    }

    /// With this load-balancing setting.
    pub fn load_balancing(mut self, lb: LoadBalancing) -> Self {
        self.0.load_balancing = Some(lb);
        self
    }

    /// The service.
    pub fn build(self) -> Service {
        self.0
    }
}

/// A policy `namespace/name` applying to its namespace, with one rule of
/// one clause holding `matches` (OR-ed).
pub fn policy(namespace: &str, name: &str, action: Action, matches: Vec<Match>) -> Authorization {
    Authorization {
        name: name.to_string(),
        namespace: namespace.to_string(),
        scope: PolicyScope::Namespace,
        action,
        rules: vec![Rule { clauses: vec![Clause { matches }] }],
        dry_run: false,
    }
}

/// `namespace/hostname` from `"namespace/hostname"`.
pub fn key(service: &str) -> NamespacedHostname {
    let (namespace, hostname) = service.split_once('/').unwrap();
    NamespacedHostname { namespace: namespace.to_string(), hostname: hostname.to_string() }
}

fn gateway(ip: IpAddr) -> GatewayAddress {
    GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress {
            network: String::new(),
            address: ip,
        }),
        hbone_port: 15008,
    }
}

fn mappings(ports: &[(u16, u16)]) -> Vec<PortMapping> {
    ports
        .iter()
        .map(|&(service_port, target_port)| PortMapping { service_port, target_port })
        .collect()
}
