#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_core::{Address, Identity, LoadBalancing, LoadBalancingMode, Locality, Scope, Workload};
use proxy_core::store::WorkloadStore;
use testkit::model::{service, workload};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn source() -> Source {
    Source {
        identity: Identity::new("cluster.local", "client", "sleep").unwrap(),
        workload: None,
        network: String::new(),
    }
}

fn store(addresses: Vec<Address>) -> Arc<WorkloadStore> {
    let store = WorkloadStore::new();
    for a in addresses {
        store.insert(a);
    }
    store
}

fn w(b: testkit::model::WorkloadBuilder) -> Address {
    Address::Workload(Box::new(b.build()))
}

fn s(b: testkit::model::ServiceBuilder) -> Address {
    Address::Service(Box::new(b.build()))
}

fn first(_: usize) -> usize {
    0
}

fn run(store: &WorkloadStore, dst: &str) -> Result<Plan, PlanError> {
    plan(store, &source(), sa(dst), 15008, &mut first)
}

fn tunnel(plan: Plan) -> (SocketAddr, SocketAddr, Vec<Identity>, bool) {
    match plan {
        Plan::Tunnel { hbone, authority, identities, via_waypoint, .. } => {
            (hbone, authority, identities, via_waypoint)
        }
        other => panic!("expected a tunnel, got {other:?}"),
    }
}

const SVC: &str = "apps/web.apps.svc.cluster.local";

#[test]
fn pod_ip_in_the_mesh_is_tunnelled_to_its_15008_expecting_its_identity() {
    let st = store(vec![w(workload("web", "apps", ip("10.0.1.5")).service_account("web"))]);
    let (hbone, authority, ids, via) = tunnel(run(&st, "10.0.1.5:8080").unwrap());
    assert_eq!(hbone, sa("10.0.1.5:15008"));
    assert_eq!(authority, sa("10.0.1.5:8080"));
    assert_eq!(ids, [Identity::new("cluster.local", "apps", "web").unwrap()]);
    assert!(!via);
}

fn peer_proxy(plan: Plan) -> Option<String> {
    match plan {
        Plan::Tunnel { peer_proxy, .. } => peer_proxy,
        other => panic!("expected a tunnel, got {other:?}"),
    }
}

#[test]
fn tunnels_to_captured_pods_name_the_node_proxy_and_others_do_not() {
    let mut native = workload("gw", "apps", ip("10.0.1.7")).node("node-b").build();
    native.native_tunnel = true;
    let mut nodeless = workload("vm", "apps", ip("10.0.1.8")).build();
    nodeless.node.clear();
    let st = store(vec![
        w(workload("web", "apps", ip("10.0.1.5")).node("node-b")),
        Address::Workload(Box::new(native)),
        Address::Workload(Box::new(nodeless)),
        w(workload("db", "apps", ip("10.0.1.9")).node("node-b").waypoint(ip("10.0.3.3"))),
        w(workload("waypoint", "apps", ip("10.0.3.3")).node("node-c")),
    ]);
    assert_eq!(peer_proxy(run(&st, "10.0.1.5:80").unwrap()).as_deref(), Some("node-b"));
    assert_eq!(peer_proxy(run(&st, "10.0.1.7:80").unwrap()), None, "serves its own tunnel");
    assert_eq!(peer_proxy(run(&st, "10.0.1.8:80").unwrap()), None, "node unknown");
    assert_eq!(peer_proxy(run(&st, "10.0.1.9:80").unwrap()), None, "a waypoint is its own");
}

#[test]
fn outside_the_mesh_passes_through_unchanged() {
    let st = store(vec![w(workload("legacy", "old", ip("10.0.1.6")).plaintext())]);
    assert!(
        matches!(run(&st, "10.0.1.6:80").unwrap(), Plan::Direct { upstream, .. } if upstream == sa("10.0.1.6:80"))
    );
    // An address nobody knows: the internet, a node, anything.
    assert!(
        matches!(run(&st, "93.184.216.34:443").unwrap(), Plan::Direct { upstream, destination } if upstream == sa("93.184.216.34:443") && destination == Destination::default())
    );
}

#[test]
fn service_vip_picks_a_healthy_endpoint_and_maps_the_target_port() {
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)])),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)]).unhealthy()),
        w(workload("web-1", "apps", ip("10.0.2.5")).endpoint_of(SVC, &[(80, 9090)])),
    ]);
    let (hbone, authority, _, via) = tunnel(run(&st, "10.96.0.10:80").unwrap());
    assert_eq!(hbone, sa("10.0.2.5:15008"), "the unhealthy endpoint is skipped");
    assert_eq!(authority, sa("10.0.2.5:9090"), "the workload's own mapping wins");
    assert!(!via);
    let Plan::Tunnel { destination, .. } = run(&st, "10.96.0.10:80").unwrap() else { panic!() };
    assert_eq!(destination.service.unwrap().name, "web");
    assert_eq!(destination.workload.unwrap().name, "web-1");
}

#[test]
fn service_endpoints_are_spread_by_the_chooser() {
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)])),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)])),
        w(workload("web-1", "apps", ip("10.0.2.5")).endpoint_of(SVC, &[(80, 8080)])),
    ]);
    let mut next = 0;
    let mut round_robin = |n: usize| {
        next += 1;
        next % n
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        let p = plan(&st, &source(), sa("10.96.0.10:80"), 15008, &mut round_robin).unwrap();
        seen.push(tunnel(p).1.ip().to_string());
    }
    assert_eq!(seen, ["10.0.2.5", "10.0.1.5", "10.0.2.5", "10.0.1.5"]);
}

#[test]
fn service_refusals_name_the_reason() {
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)])),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)]).unhealthy()),
    ]);
    assert_eq!(
        run(&st, "10.96.0.10:80").unwrap_err(),
        PlanError::NoHealthyEndpoint("web.apps.svc.cluster.local".into())
    );
    assert_eq!(
        run(&st, "10.96.0.10:443").unwrap_err(),
        PlanError::UnknownPort { service: "web.apps.svc.cluster.local".into(), port: 443 }
    );
}

#[test]
fn a_plaintext_endpoint_of_a_service_is_reached_directly() {
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)])),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)]).plaintext()),
    ]);
    assert!(
        matches!(run(&st, "10.96.0.10:80").unwrap(), Plan::Direct { upstream, .. } if upstream == sa("10.0.1.5:8080"))
    );
}

#[test]
fn a_service_behind_a_waypoint_goes_to_the_waypoint_with_the_vip_as_authority() {
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)]).waypoint(ip("10.0.3.3"))),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)])),
        w(workload("waypoint", "apps", ip("10.0.3.3")).service_account("waypoint")),
    ]);
    let (hbone, authority, ids, via) = tunnel(run(&st, "10.96.0.10:80").unwrap());
    assert_eq!(hbone, sa("10.0.3.3:15008"));
    assert_eq!(authority, sa("10.96.0.10:80"));
    assert_eq!(ids, [Identity::new("cluster.local", "apps", "waypoint").unwrap()]);
    assert!(via);
}

#[test]
fn a_pod_behind_a_waypoint_goes_to_the_waypoint_and_a_missing_waypoint_is_refused() {
    let st = store(vec![
        w(workload("db", "apps", ip("10.0.1.9")).waypoint(ip("10.0.3.3"))),
        w(workload("waypoint", "apps", ip("10.0.3.3")).service_account("waypoint")),
        w(workload("orphan", "apps", ip("10.0.1.10")).waypoint(ip("10.0.9.9"))),
    ]);
    let (hbone, authority, _, via) = tunnel(run(&st, "10.0.1.9:5432").unwrap());
    assert_eq!((hbone, authority, via), (sa("10.0.3.3:15008"), sa("10.0.1.9:5432"), true));
    assert_eq!(
        run(&st, "10.0.1.10:80").unwrap_err(),
        PlanError::WaypointNotFound("10.0.9.9".into())
    );
}

#[test]
fn the_waypoint_itself_is_not_sent_back_to_itself() {
    let st = store(vec![
        w(workload("db", "apps", ip("10.0.1.9")).waypoint(ip("10.0.3.3"))),
        w(workload("waypoint", "apps", ip("10.0.3.3")).service_account("waypoint")),
    ]);
    let from_waypoint = Source {
        identity: Identity::new("cluster.local", "apps", "waypoint").unwrap(),
        workload: None,
        network: String::new(),
    };
    let p = plan(&st, &from_waypoint, sa("10.0.1.9:5432"), 15008, &mut first).unwrap();
    let (hbone, authority, _, via) = tunnel(p);
    assert_eq!((hbone, authority, via), (sa("10.0.1.9:15008"), sa("10.0.1.9:5432"), false));
}

#[test]
fn passthrough_load_balancing_connects_to_the_address_dialled() {
    let lb = LoadBalancing { mode: LoadBalancingMode::Passthrough, ..Default::default() };
    let st = store(vec![
        s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)]).load_balancing(lb)),
        w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)])),
    ]);
    assert!(
        matches!(run(&st, "10.96.0.10:80").unwrap(), Plan::Direct { upstream, .. } if upstream == sa("10.96.0.10:80"))
    );
}

fn located(name: &str, addr: &str, node: &str, zone: &str) -> Workload {
    let mut w = workload(name, "apps", ip(addr)).endpoint_of(SVC, &[(80, 8080)]).node(node).build();
    w.locality = Some(Locality { region: "r".into(), zone: zone.into(), subzone: String::new() });
    w
}

#[test]
fn routing_preferences_strict_and_failover() {
    let client = Arc::new(located("sleep", "10.0.1.2", "node-a", "z1"));
    let mut src = source();
    src.workload = Some(client);
    let mk = |mode| {
        let lb = LoadBalancing {
            mode,
            routing_preference: vec![Scope::Zone, Scope::Node],
            ..Default::default()
        };
        store(vec![
            s(service("web", "apps", ip("10.96.0.10"), &[(80, 8080)]).load_balancing(lb)),
            Address::Workload(Box::new(located("far", "10.0.9.5", "node-x", "z2"))),
            Address::Workload(Box::new(located("zone", "10.0.2.5", "node-b", "z1"))),
        ])
    };
    // Failover: nobody on our node, so the best match is the same zone.
    let st = mk(LoadBalancingMode::Failover);
    for _ in 0..3 {
        let p = plan(&st, &src, sa("10.96.0.10:80"), 15008, &mut |n| n - 1).unwrap();
        assert_eq!(tunnel(p).0, sa("10.0.2.5:15008"));
    }
    // Strict: zone AND node must match; nothing does.
    let st = mk(LoadBalancingMode::Strict);
    assert!(matches!(
        plan(&st, &src, sa("10.96.0.10:80"), 15008, &mut first),
        Err(PlanError::NoHealthyEndpoint(_))
    ));
}

#[test]
fn a_waypoint_by_name_that_is_missing_or_not_ready_is_refused_never_skipped() {
    let by_name = |name: &str| {
        let mut b = service("web", "apps", ip("10.96.0.10"), &[(80, 8080)]).build();
        b.waypoint = Some(mesh_core::GatewayAddress {
            destination: mesh_core::GatewayDestination::Hostname(mesh_core::NamespacedHostname {
                namespace: "apps".into(),
                hostname: format!("{name}.apps.svc.cluster.local"),
            }),
            hbone_port: 15008,
        });
        Address::Service(Box::new(b))
    };
    const WAYPOINT: &str = "apps/waypoint.apps.svc.cluster.local";
    let endpoint = || w(workload("web-0", "apps", ip("10.0.1.5")).endpoint_of(SVC, &[(80, 8080)]));
    // Named, and no such service: refused.
    let missing = store(vec![by_name("ghost"), endpoint()]);
    assert_eq!(
        run(&missing, "10.96.0.10:80").unwrap_err(),
        PlanError::WaypointNotFound("apps/ghost.apps.svc.cluster.local".into())
    );
    // The waypoint's service exists, its only pod is not ready: refused.
    let not_ready = store(vec![
        by_name("waypoint"),
        s(service("waypoint", "apps", ip("10.96.0.99"), &[(15008, 15008)])),
        endpoint(),
        w(workload("waypoint-0", "apps", ip("10.0.3.3"))
            .service_account("waypoint")
            .endpoint_of(WAYPOINT, &[(15008, 15008)])
            .unhealthy()),
    ]);
    assert!(matches!(
        run(&not_ready, "10.96.0.10:80").unwrap_err(),
        PlanError::WaypointNotFound(_)
    ));
}
