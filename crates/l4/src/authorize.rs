//! Whether an inbound connection may reach its pod: plain data in, a
//! decision out, tested without sockets.

use std::net::{IpAddr, SocketAddr};

use mesh_core::policy::{Connection, Decision, DecisionReason, evaluate};
use mesh_core::{GatewayDestination, Identity, Workload};
use proxy_core::store::WorkloadStore;
use tracing::info;

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The destination pod is not (yet) in the workload store, so its
    /// policies are unknown: refused rather than guessed.
    #[error("destination workload {0} is not known yet")]
    UnknownDestination(String),
    /// The pod is behind a waypoint and the caller is not that waypoint.
    #[error("{caller} bypassed waypoint {waypoint}")]
    BypassedWaypoint {
        /// The caller's identity.
        caller: String,
        /// The waypoint.
        waypoint: String,
    },
    /// Authorization policy says no.
    #[error("{0}")]
    Denied(String),
}

/// Decides on a connection to `destination` from `source_ip`, with the
/// verified `source_identity` (None for plaintext).
pub fn authorize(
    store: &WorkloadStore,
    destination: Option<&Workload>,
    pod_uid: &str,
    source_identity: Option<&Identity>,
    source_ip: IpAddr,
    target: SocketAddr,
) -> Result<Decision, Refusal> {
    let workload = destination.ok_or_else(|| Refusal::UnknownDestination(pod_uid.to_string()))?;
    if let (Some(waypoint), Some(caller)) = (&workload.waypoint, source_identity) {
        let allowed = waypoint_identities(store, &waypoint.destination);
        if !allowed.contains(caller) {
            let name = match &waypoint.destination {
                GatewayDestination::Address(a) => a.address.to_string(),
                GatewayDestination::Hostname(h) => h.to_string(),
            };
            return Err(Refusal::BypassedWaypoint { caller: caller.to_string(), waypoint: name });
        }
    }
    let policies = store.policies_for(workload);
    let decision = evaluate(
        policies.iter().map(|p| p.as_ref()),
        &Connection {
            source_identity: source_identity.cloned(),
            source_ip,
            destination_ip: target.ip(),
            destination_port: target.port(),
        },
    );
    if let Some(would) = decision.dry_run_change() {
        // Istio's ztunnel logs these at debug; a dry run exists to be read,
        // so ours are at info, one line per connection whose verdict the
        // dry-run policies would change.
        let verdict = if would.allowed() { "allow" } else { "deny" };
        info!(
            workload = %workload.uid,
            source = %source_ip,
            destination = %target,
            would = describe(would),
            "dry-run policies would {verdict} this connection"
        );
    }
    if decision.allowed() { Ok(decision) } else { Err(Refusal::Denied(describe(&decision.reason))) }
}

/// The source address policy and telemetry see for an HBONE connection
/// from `peer` at `peer_addr`: the `Forwarded: for=` address only when the
/// peer is one of the destination's waypoints (its own, or one of a service
/// it backs: each proxies for the real client); from anyone else, the
/// connection's own source. Any
/// authenticated peer can write any address into that header, so trusting
/// it from everyone would let any identity pass an `ipBlocks` rule.
pub fn trusted_source(
    store: &WorkloadStore,
    destination: Option<&Workload>,
    peer: &Identity,
    peer_addr: SocketAddr,
    forwarded: Option<&hbone::authority::ForwardedFor>,
) -> SocketAddr {
    let from_waypoint = destination.is_some_and(|w| {
        fronting_waypoints(store, w)
            .iter()
            .any(|waypoint| waypoint_identities(store, waypoint).contains(peer))
    });
    match forwarded {
        Some(f) if from_waypoint => SocketAddr::new(f.ip, f.port.unwrap_or(0)),
        _ => peer_addr,
    }
}

fn describe(reason: &DecisionReason) -> String {
    match reason {
        DecisionReason::DeniedByPolicy(p) => {
            format!("denied by policy {}/{} (rule {})", p.namespace, p.name, p.rule)
        }
        DecisionReason::NoAllowPolicyMatched => "no ALLOW policy matched".into(),
        DecisionReason::AllowedByPolicy(_) | DecisionReason::NoPolicies => "allowed".into(),
    }
}

/// The waypoints in front of a workload: its own binding, and those of the
/// services it backs.
fn fronting_waypoints(store: &WorkloadStore, workload: &Workload) -> Vec<GatewayDestination> {
    let own = workload.waypoint.as_ref().map(|w| w.destination.clone());
    let of_services = workload
        .services
        .keys()
        .filter_map(|key| store.service(key)?.waypoint.as_ref().map(|w| w.destination.clone()));
    own.into_iter().chain(of_services).collect()
}

/// Identities of the workloads behind a waypoint address.
fn waypoint_identities(store: &WorkloadStore, destination: &GatewayDestination) -> Vec<Identity> {
    let from_service = |key: &mesh_core::NamespacedHostname| {
        store.endpoints(key).into_iter().map(|e| e.workload.identity.clone()).collect::<Vec<_>>()
    };
    match destination {
        GatewayDestination::Address(addr) => {
            if let Some(w) = store.workload_by_ip(&addr.network, addr.address) {
                vec![w.identity.clone()]
            } else if let Some(s) = store.service_by_vip(&addr.network, addr.address) {
                from_service(&s.key())
            } else {
                Vec::new()
            }
        }
        GatewayDestination::Hostname(key) => from_service(key),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_core::Address;
    use mesh_core::policy::{Action, IpNet, Match, StringMatch};
    use testkit::model::{policy, service, workload};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::new("cluster.local", ns, sa).unwrap()
    }

    fn decide(
        store: &WorkloadStore,
        caller: Option<Identity>,
        src: &str,
        port: u16,
    ) -> Result<Decision, Refusal> {
        let dst = store.workload("Kubernetes//Pod/apps/db").unwrap();
        authorize(
            store,
            Some(&dst),
            &dst.uid,
            caller.as_ref(),
            ip(src),
            SocketAddr::new(ip("10.0.1.9"), port),
        )
    }

    #[test]
    fn policies_by_principal_namespace_port_and_source_ip() {
        let store = WorkloadStore::new();
        store.insert(Address::Workload(Box::new(workload("db", "apps", ip("10.0.1.9")).build())));
        assert!(decide(&store, None, "10.0.0.1", 5432).is_ok(), "no policy: allowed");
        store.insert_policy(policy(
            "apps",
            "only-api",
            Action::Allow,
            vec![Match {
                principals: vec![StringMatch::Exact("cluster.local/ns/apps/sa/api".into())],
                destination_ports: vec![5432],
                ..Match::default()
            }],
        ));
        assert!(decide(&store, Some(id("apps", "api")), "10.0.0.1", 5432).is_ok());
        let refusal = decide(&store, Some(id("apps", "web")), "10.0.0.1", 5432).unwrap_err();
        assert_eq!(refusal, Refusal::Denied("no ALLOW policy matched".into()));
        assert!(decide(&store, Some(id("apps", "api")), "10.0.0.1", 22).is_err(), "wrong port");
        assert!(decide(&store, None, "10.0.0.1", 5432).is_err(), "plaintext has no principal");

        store.insert_policy(policy(
            "apps",
            "block-net",
            Action::Deny,
            vec![Match {
                source_ips: vec![IpNet::new(ip("10.0.0.0"), 24).unwrap()],
                ..Match::default()
            }],
        ));
        let refusal = decide(&store, Some(id("apps", "api")), "10.0.0.7", 5432).unwrap_err();
        assert_eq!(refusal, Refusal::Denied("denied by policy apps/block-net (rule 0)".into()));
        assert!(decide(&store, Some(id("apps", "api")), "10.0.5.7", 5432).is_ok());
    }

    #[test]
    fn dry_run_policies_are_evaluated_but_never_refuse() {
        let store = WorkloadStore::new();
        store.insert(Address::Workload(Box::new(workload("db", "apps", ip("10.0.1.9")).build())));
        let mut dry = policy("apps", "dry-deny", Action::Deny, vec![Match::default()]);
        dry.rules[0].clauses.clear(); // matches everything
        dry.dry_run = true;
        store.insert_policy(dry);
        let decision = decide(&store, Some(id("apps", "api")), "10.0.0.1", 5432).unwrap();
        assert!(
            matches!(decision.dry_run_change(), Some(DecisionReason::DeniedByPolicy(p)) if p.name == "dry-deny"),
            "{decision:?}"
        );
    }

    #[test]
    fn only_the_waypoint_may_reach_a_pod_behind_it() {
        let store = WorkloadStore::new();
        store.insert(Address::Workload(Box::new(
            workload("db", "apps", ip("10.0.1.9")).waypoint(ip("10.0.3.3")).build(),
        )));
        store.insert(Address::Workload(Box::new(
            workload("waypoint", "apps", ip("10.0.3.3")).service_account("waypoint").build(),
        )));
        assert!(decide(&store, Some(id("apps", "waypoint")), "10.0.3.3", 5432).is_ok());
        let refusal = decide(&store, Some(id("apps", "api")), "10.0.0.1", 5432).unwrap_err();
        assert!(matches!(refusal, Refusal::BypassedWaypoint { .. }), "{refusal}");
    }

    #[test]
    fn forwarded_is_trusted_only_from_the_destinations_waypoint() {
        let store = WorkloadStore::new();
        store.insert(Address::Workload(Box::new(
            workload("db", "apps", ip("10.0.1.9")).waypoint(ip("10.0.3.3")).build(),
        )));
        store.insert(Address::Workload(Box::new(workload("web", "apps", ip("10.0.1.8")).build())));
        store.insert(Address::Workload(Box::new(
            workload("waypoint", "apps", ip("10.0.3.3")).service_account("waypoint").build(),
        )));
        let spoofed = hbone::authority::ForwardedFor { ip: ip("10.9.9.9"), port: Some(1234) };
        let peer_addr: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let db = store.workload("Kubernetes//Pod/apps/db").unwrap();
        let web = store.workload("Kubernetes//Pod/apps/web").unwrap();
        let source = |dst: &Workload, peer: Identity| {
            trusted_source(&store, Some(dst), &peer, peer_addr, Some(&spoofed))
        };
        assert_eq!(source(&db, id("apps", "waypoint")), "10.9.9.9:1234".parse().unwrap());
        assert_eq!(source(&db, id("apps", "api")), peer_addr, "not the waypoint: header ignored");
        assert_eq!(source(&web, id("apps", "waypoint")), peer_addr, "web has no waypoint");
        // A pod that backs a service behind the waypoint trusts it too.
        store.insert(Address::Service(Box::new(
            service("api", "apps", ip("10.96.0.7"), &[(80, 8080)]).waypoint(ip("10.0.3.3")).build(),
        )));
        store.insert(Address::Workload(Box::new(
            workload("api", "apps", ip("10.0.1.7"))
                .endpoint_of("apps/api.apps.svc.cluster.local", &[(80, 8080)])
                .build(),
        )));
        let api = store.workload("Kubernetes//Pod/apps/api").unwrap();
        assert_eq!(source(&api, id("apps", "waypoint")), "10.9.9.9:1234".parse().unwrap());
        assert_eq!(source(&api, id("apps", "web")), peer_addr, "not its waypoint");
        assert_eq!(
            trusted_source(&store, None, &id("apps", "waypoint"), peer_addr, Some(&spoofed)),
            peer_addr
        );
    }

    #[test]
    fn an_unknown_destination_is_refused() {
        let store = WorkloadStore::new();
        let refusal =
            authorize(&store, None, "uid-1", None, ip("10.0.0.1"), "10.0.1.9:80".parse().unwrap())
                .unwrap_err();
        assert_eq!(refusal, Refusal::UnknownDestination("uid-1".into()));
    }
}
