//! Where an outbound connection goes: a plain-data plan computed from the
//! workload store, tested without sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::{
    GatewayAddress, GatewayDestination, HealthPolicy, Identity, LoadBalancingMode, Scope, Service,
    TunnelProtocol, Workload, WorkloadStatus,
};
use proxy_core::store::{Endpoint, WorkloadStore};

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct Source {
    /// The source pod's identity.
    pub identity: Identity,
    /// The source workload, once xDS has it (for locality preferences).
    pub workload: Option<Arc<Workload>>,
    /// The network the source is on.
    pub network: String,
}

/// What the connection was addressed to, for telemetry and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destination {
    /// The service, when a VIP was dialled.
    pub service: Option<Arc<Service>>,
    /// The workload the bytes reach (the endpoint, not a waypoint).
    pub workload: Option<Arc<Workload>>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Plain TCP, unchanged: the destination is not in the mesh.
    Direct {
        /// Where to connect.
        upstream: SocketAddr,
        /// For telemetry.
        destination: Destination,
    },
    /// An HBONE tunnel.
    Tunnel {
        /// The HBONE server (`<pod or waypoint ip>:15008`).
        hbone: SocketAddr,
        /// The `:authority`: the endpoint address, or the original service
        /// address when going through a waypoint.
        authority: SocketAddr,
        /// Identities the HBONE server may prove.
        identities: Vec<Identity>,
        /// Whether the tunnel leads to a waypoint.
        via_waypoint: bool,
        /// The proxy serving `hbone` with other addresses (the node's
        /// ztunnel, named by the node), so TLS sessions resume across them.
        peer_proxy: Option<String>,
        /// For telemetry.
        destination: Destination,
    },
}

/// Why no plan could be made: the connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Every endpoint is unhealthy, filtered out, or none exists.
    #[error("service {0} has no healthy endpoint")]
    NoHealthyEndpoint(String),
    /// The service does not declare the port.
    #[error("service {service} has no port {port}")]
    UnknownPort {
        /// The service hostname.
        service: String,
        /// The port dialled.
        port: u16,
    },
    /// A waypoint is named but cannot be resolved.
    #[error("waypoint {0} of the destination is not known")]
    WaypointNotFound(String),
}

/// Picks an index below `n` (round robin in production, fixed in tests).
pub type Chooser<'a> = &'a mut dyn FnMut(usize) -> usize;

/// Decides where a connection from `source` to `original` goes.
pub fn plan(
    store: &WorkloadStore,
    source: &Source,
    original: SocketAddr,
    hbone_port: u16,
    choose: Chooser<'_>,
) -> Result<Plan, PlanError> {
    let ip = original.ip();
    if let Some(service) = store.service_by_vip(&source.network, ip) {
        return plan_service(store, source, original, service, hbone_port, choose);
    }
    if let Some(workload) = store.workload_by_ip(&source.network, ip) {
        if let Some(waypoint) = workload.waypoint.clone() {
            let destination = Destination { service: None, workload: Some(workload) };
            return via_waypoint(store, source, &waypoint, original, destination, choose);
        }
        return Ok(to_workload(workload, original, hbone_port, None));
    }
    Ok(Plan::Direct { upstream: original, destination: Destination::default() })
}

fn plan_service(
    store: &WorkloadStore,
    source: &Source,
    original: SocketAddr,
    service: Arc<Service>,
    hbone_port: u16,
    choose: Chooser<'_>,
) -> Result<Plan, PlanError> {
    let lb = service.load_balancing.clone().unwrap_or_default();
    if lb.mode == LoadBalancingMode::Passthrough {
        let destination = Destination { service: Some(service), workload: None };
        return Ok(Plan::Direct { upstream: original, destination });
    }
    if let Some(waypoint) = &service.waypoint {
        let destination = Destination { service: Some(service.clone()), workload: None };
        return via_waypoint(store, source, waypoint, original, destination, choose);
    }
    let port = original.port();
    let declared = service.ports.iter().find(|p| p.service_port == port);
    if declared.is_none() && !service.ports.is_empty() {
        return Err(PlanError::UnknownPort { service: service.hostname.clone(), port });
    }
    let candidates = candidates(store.endpoints(&service.key()), &lb, source, port);
    if candidates.is_empty() {
        return Err(PlanError::NoHealthyEndpoint(service.hostname.clone()));
    }
    let picked = &candidates[choose(candidates.len()) % candidates.len()];
    let target_port = picked
        .ports
        .iter()
        .find(|p| p.service_port == port && p.target_port != 0)
        .or(declared.filter(|p| p.target_port != 0))
        .map_or(port, |p| p.target_port);
    let Some(ip) = picked.workload.addresses.first() else {
        return Err(PlanError::NoHealthyEndpoint(service.hostname.clone()));
    };
    let target = SocketAddr::new(*ip, target_port);
    Ok(to_workload(picked.workload.clone(), target, hbone_port, Some(service)))
}

/// Endpoints that may be picked: healthy (unless the policy allows all),
/// with an address, and within the routing preferences.
fn candidates(
    endpoints: Vec<Endpoint>,
    lb: &mesh_core::LoadBalancing,
    source: &Source,
    port: u16,
) -> Vec<Endpoint> {
    let usable: Vec<Endpoint> = endpoints
        .into_iter()
        .filter(|e| {
            lb.health_policy == HealthPolicy::AllowAll
                || e.workload.status == WorkloadStatus::Healthy
        })
        .filter(|e| !e.workload.addresses.is_empty())
        // A workload that maps other ports of the service but not this one
        // does not serve it.
        .filter(|e| e.ports.is_empty() || e.ports.iter().any(|p| p.service_port == port))
        .collect();
    if lb.routing_preference.is_empty() || lb.mode == LoadBalancingMode::Unspecified {
        return usable;
    }
    let Some(src) = &source.workload else {
        // Without knowing where the source runs, no preference can apply.
        return if lb.mode == LoadBalancingMode::Strict { Vec::new() } else { usable };
    };
    // How many leading preferences each endpoint meets.
    let rank = |w: &Workload| {
        lb.routing_preference.iter().take_while(|scope| same_scope(**scope, src, w)).count()
    };
    match lb.mode {
        LoadBalancingMode::Strict => {
            let all = lb.routing_preference.len();
            usable.into_iter().filter(|e| rank(&e.workload) == all).collect()
        }
        _ => {
            let best = usable.iter().map(|e| rank(&e.workload)).max().unwrap_or(0);
            usable.into_iter().filter(|e| rank(&e.workload) == best).collect()
        }
    }
}

fn same_scope(scope: Scope, a: &Workload, b: &Workload) -> bool {
    let loc = |w: &Workload| w.locality.clone().unwrap_or_default();
    let (la, lb) = (loc(a), loc(b));
    match scope {
        Scope::Region => la.region == lb.region,
        Scope::Zone => la.region == lb.region && la.zone == lb.zone,
        Scope::Subzone => la == lb,
        Scope::Node => a.node == b.node,
        Scope::Cluster => a.cluster_id == b.cluster_id,
        Scope::Network => a.network == b.network,
    }
}

fn via_waypoint(
    store: &WorkloadStore,
    source: &Source,
    waypoint: &GatewayAddress,
    original: SocketAddr,
    destination: Destination,
    choose: Chooser<'_>,
) -> Result<Plan, PlanError> {
    let (workload, name) = match &waypoint.destination {
        GatewayDestination::Address(addr) => {
            let name = addr.address.to_string();
            let found = store.workload_by_ip(&addr.network, addr.address).or_else(|| {
                let service = store.service_by_vip(&addr.network, addr.address)?;
                pick_any(store, &service, choose)
            });
            (found, name)
        }
        GatewayDestination::Hostname(key) => {
            let found = store.service(key).and_then(|s| pick_any(store, &s, choose));
            (found, key.to_string())
        }
    };
    let workload = workload.ok_or_else(|| PlanError::WaypointNotFound(name.clone()))?;
    if workload.identity == source.identity {
        // The waypoint's own traffic to its backends: never loop back.
        return Ok(to_workload(
            destination.workload.clone().unwrap_or(workload),
            original,
            waypoint.hbone_port,
            destination.service,
        ));
    }
    let ip = *workload.addresses.first().ok_or(PlanError::WaypointNotFound(name))?;
    Ok(Plan::Tunnel {
        hbone: SocketAddr::new(ip, waypoint.hbone_port),
        authority: original,
        identities: vec![workload.identity.clone()],
        via_waypoint: true,
        // A waypoint serves HBONE itself, at its own address.
        peer_proxy: None,
        destination,
    })
}

fn pick_any(
    store: &WorkloadStore,
    service: &Service,
    choose: Chooser<'_>,
) -> Option<Arc<Workload>> {
    let healthy: Vec<_> = store
        .endpoints(&service.key())
        .into_iter()
        .filter(|e| {
            e.workload.status == WorkloadStatus::Healthy && !e.workload.addresses.is_empty()
        })
        .collect();
    if healthy.is_empty() {
        return None;
    }
    Some(healthy[choose(healthy.len()) % healthy.len()].workload.clone())
}

fn to_workload(
    workload: Arc<Workload>,
    target: SocketAddr,
    hbone_port: u16,
    service: Option<Arc<Service>>,
) -> Plan {
    let hbone = SocketAddr::new(target.ip(), hbone_port);
    let identity = workload.identity.clone();
    let in_mesh = workload.protocol == TunnelProtocol::Hbone;
    // A captured pod's HBONE is served by its node's ztunnel, like every pod
    // on that node; a workload with its own tunnel serves it itself.
    let peer_proxy =
        (!workload.native_tunnel && !workload.node.is_empty()).then(|| workload.node.clone());
    let destination = Destination { service, workload: Some(workload) };
    if in_mesh {
        Plan::Tunnel {
            hbone,
            authority: target,
            identities: vec![identity],
            via_waypoint: false,
            peer_proxy,
            destination,
        }
    } else {
        Plan::Direct { upstream: target, destination }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
