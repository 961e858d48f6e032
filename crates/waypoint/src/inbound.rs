//! HBONE on 15008: which tunnels the waypoint accepts and what serves
//! them. A tunnel is accepted only to a service or workload bound to this
//! waypoint (anything else would make the waypoint a proxy for traffic it
//! was never given, carrying its identity); the tunnel itself then goes to
//! the L7 engine.

use std::net::IpAddr;
use std::sync::Arc;

use hbone::{ConnectHandler, H2Stream, InboundConnect, Tunnel, Verdict};
use l7::balance::Endpoint;
use l7::metrics::Peer;
use l7::{Downstream, Engine, Target};
use mesh_core::{GatewayAddress, GatewayDestination, Identity};
use proxy_core::store::WorkloadStore;
use tracing::info;

use crate::upstream::HboneConnector;
use crate::view::MeshView;

/// Which waypoint this is: its Gateway, and its own addresses.
#[derive(Debug, Clone)]
pub struct WaypointName {
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// This instance's addresses (a binding by address names one of them).
    pub addresses: Vec<IpAddr>,
}

impl WaypointName {
    /// Whether `binding` names this waypoint.
    pub fn is(&self, binding: &GatewayAddress) -> bool {
        match &binding.destination {
            GatewayDestination::Hostname(h) => {
                h.namespace == self.namespace
                    && h.hostname.split('.').next() == Some(self.name.as_str())
            }
            GatewayDestination::Address(a) => self.addresses.contains(&a.address),
        }
    }
}

/// The engine the waypoint runs.
pub type WaypointEngine = Engine<HboneConnector, MeshView>;

/// Decides on each CONNECT.
pub struct WaypointHandler {
    /// The engine tunnels go to.
    pub engine: Arc<WaypointEngine>,
    /// Who we are.
    pub me: WaypointName,
    /// The network our clients are on.
    pub network: String,
}

/// An accepted tunnel, on its way to the engine.
pub struct L7Tunnel {
    engine: Arc<WaypointEngine>,
    downstream: Downstream,
}

impl Tunnel for L7Tunnel {
    async fn serve(self, tunnel: H2Stream) {
        self.engine.serve_tunnel(tunnel, self.downstream).await;
    }
}

/// How the metrics name the client: from its identity, and from the W3C
/// `baggage` its ztunnel sent (Istio's keys), when there is one.
pub fn client_peer(identity: &Identity, baggage: Option<&str>) -> Peer {
    let mut peer = Peer {
        namespace: identity.namespace().to_string(),
        principal: identity.to_string(),
        ..Default::default()
    };
    for item in baggage.unwrap_or_default().split(',') {
        let Some((key, value)) = item.split(';').next().and_then(|kv| kv.split_once('=')) else {
            continue;
        };
        let value = percent_decode(value.trim());
        match key.trim() {
            "k8s.cluster.name" | "k8s.namespace.name" => {}
            "service.name" => peer.canonical_service = value,
            "service.version" => peer.canonical_revision = value,
            // k8s.deployment.name, k8s.job.name, k8s.pod.name...
            k if k.starts_with("k8s.") && k.ends_with(".name") => peer.workload = value,
            _ => {}
        }
    }
    peer
}

/// `%XX` sequences decoded; anything malformed kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a CONNECT's target leads, if this waypoint fronts it.
pub fn fronted_target(
    store: &WorkloadStore,
    me: &WaypointName,
    network: &str,
    target: std::net::SocketAddr,
) -> Result<Target, String> {
    if let Some(service) = store.service_by_vip(network, target.ip()) {
        if !service.waypoint.as_ref().is_some_and(|w| me.is(w)) {
            return Err(format!("service {} is not bound to this waypoint", service.hostname));
        }
        if !service.ports.is_empty()
            && !service.ports.iter().any(|p| p.service_port == target.port())
        {
            return Err(format!("service {} has no port {}", service.hostname, target.port()));
        }
        return Ok(Target::Service { key: service.key().to_string(), port: target.port() });
    }
    if let Some(workload) = store.workload_by_ip(network, target.ip()) {
        if !workload.waypoint.as_ref().is_some_and(|w| me.is(w)) {
            return Err(format!("workload {} is not bound to this waypoint", workload.name));
        }
        return Ok(Target::Workload {
            endpoint: Endpoint { uid: workload.uid.as_str().into(), address: target },
        });
    }
    Err(format!("{target} is not a destination this waypoint fronts"))
}

impl ConnectHandler for WaypointHandler {
    type Upstream = L7Tunnel;

    async fn handle(&self, request: InboundConnect) -> Verdict<L7Tunnel> {
        let store = &self.engine.destinations().store;
        match fronted_target(store, &self.me, &self.network, request.target) {
            Ok(target) => Verdict::Accept(L7Tunnel {
                engine: self.engine.clone(),
                downstream: Downstream {
                    // The peer's own address: a `Forwarded` header from a
                    // client is not proof of anything.
                    source: request.peer_addr,
                    peer: client_peer(&request.peer_identity, request.baggage.as_deref()),
                    target,
                    destination: request.target,
                },
            }),
            Err(why) => {
                info!(target: "access", peer = %request.peer_identity, destination = %request.target,
                    reason = %why, "tunnel refused");
                Verdict::Deny(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_client_is_named_by_its_identity_and_baggage() {
        let id = Identity::new("cluster.local", "apps", "sleep").unwrap();
        let peer = client_peer(
            &id,
            Some(
                "k8s.cluster.name=Kubernetes,k8s.namespace.name=apps,k8s.deployment.name=sleep%20app,service.name=sleep,service.version=v1;prop=x",
            ),
        );
        assert_eq!(peer.workload, "sleep app");
        assert_eq!(
            (peer.canonical_service.as_str(), peer.canonical_revision.as_str()),
            ("sleep", "v1")
        );
        assert_eq!(peer.namespace, "apps", "from the identity, not the baggage");
        assert_eq!(peer.principal, "spiffe://cluster.local/ns/apps/sa/sleep");
        let bare = client_peer(&id, Some("garbage,=,%zz"));
        assert_eq!(bare.workload, "");
    }
}
