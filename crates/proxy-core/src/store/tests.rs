#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use ::xds::{Handler, Update};
use mesh_core::Address;
use mesh_core::policy::{Action, Match, PolicyScope, StringMatch};
use mesh_proto::type_url;
use prost_types::Any;
use testkit::model::{policy, service, workload};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn put(store: &WorkloadStore, a: Address) {
    store.insert(a);
}

#[test]
fn indexes_follow_inserts_replacements_and_removals() {
    let store = WorkloadStore::new();
    let web = workload("web", "apps", ip("10.0.0.1"))
        .endpoint_of("apps/web.apps.svc.cluster.local", &[(80, 8080)]);
    put(&store, Address::Workload(Box::new(web.clone().build())));
    put(
        &store,
        Address::Service(Box::new(service("web", "apps", ip("10.96.0.1"), &[(80, 8080)]).build())),
    );

    assert_eq!(store.workload_by_ip("", ip("10.0.0.1")).unwrap().name, "web");
    assert!(store.workload_by_ip("other-network", ip("10.0.0.1")).is_none());
    let svc = store.service_by_vip("", ip("10.96.0.1")).unwrap();
    assert_eq!(svc.name, "web");
    assert_eq!(store.services_by_hostname("web.apps.svc.cluster.local").len(), 1);
    let endpoints = store.endpoints(&svc.key());
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].ports[0].target_port, 8080);

    // The pod moves to a new IP: the old one no longer resolves.
    let moved = web.clone().build();
    let mut moved = moved;
    moved.addresses = vec![ip("10.0.0.9")];
    put(&store, Address::Workload(Box::new(moved)));
    assert!(store.workload_by_ip("", ip("10.0.0.1")).is_none());
    assert!(store.workload_by_ip("", ip("10.0.0.9")).is_some());

    store.remove("Kubernetes//Pod/apps/web");
    assert!(store.workload_by_ip("", ip("10.0.0.9")).is_none());
    assert!(store.endpoints(&svc.key()).is_empty());

    store.remove("apps/web.apps.svc.cluster.local");
    assert!(store.service_by_vip("", ip("10.96.0.1")).is_none());
    assert!(store.services_by_hostname("web.apps.svc.cluster.local").is_empty());
    assert_eq!(store.counts(), StoreCounts::default());
}

#[test]
fn policies_apply_by_scope() {
    let store = WorkloadStore::new();
    let everyone = Match { principals: vec![StringMatch::Presence], ..Match::default() };
    let mut global = policy("istio-system", "global", Action::Deny, vec![everyone.clone()]);
    global.scope = PolicyScope::Global;
    let ns = policy("apps", "ns-wide", Action::Allow, vec![everyone.clone()]);
    let other_ns = policy("other", "ns-wide", Action::Allow, vec![everyone.clone()]);
    let mut selected = policy("apps", "selected", Action::Allow, vec![everyone]);
    selected.scope = PolicyScope::WorkloadSelector;
    for p in [global, ns, other_ns, selected.clone()] {
        store.insert_policy(p);
    }
    let plain = workload("a", "apps", ip("10.0.0.1")).build();
    let listed = workload("b", "apps", ip("10.0.0.2")).policies(&["apps/selected"]).build();
    let names = |w| store.policies_for(w).iter().map(|p| p.key()).collect::<Vec<_>>();
    assert_eq!(names(&plain), ["apps/ns-wide", "istio-system/global"]);
    assert_eq!(names(&listed), ["apps/ns-wide", "apps/selected", "istio-system/global"]);
    store.remove_policy("apps/selected");
    assert_eq!(names(&listed), ["apps/ns-wide", "istio-system/global"]);
}

#[test]
fn host_network_workloads_are_not_found_by_ip() {
    let store = WorkloadStore::new();
    let mut w = workload("node-agent", "kube-system", ip("192.168.1.5")).build();
    w.network_mode = NetworkMode::HostNetwork;
    put(&store, Address::Workload(Box::new(w)));
    assert!(store.workload_by_ip("", ip("192.168.1.5")).is_none());
    assert!(store.workload("Kubernetes//Pod/kube-system/node-agent").is_some());
}

#[test]
fn xds_handler_applies_good_resources_and_names_bad_ones() {
    let store = WorkloadStore::new();
    let version = store.subscribe();
    let mut handler = AddressHandler(store.clone());
    let good = Address::Workload(Box::new(workload("web", "apps", ip("10.0.0.1")).build()));
    let good_any = Any::from_msg(&mesh_proto::workload::Address::from(&good)).unwrap();
    let garbage =
        Any { type_url: mesh_proto::type_url::ADDRESS.into(), value: vec![0xff, 0x01, 0x02] };
    let result = handler.apply(Update {
        resources: vec![
            (good.resource_name(), good_any.clone()),
            ("junk".into(), garbage),
            ("wrong-name".into(), good_any),
        ],
        removed: vec![],
    });
    let rejected = result.unwrap_err();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].name, "junk");
    assert!(rejected[0].reason.contains("istio.workload.Address"), "{}", rejected[0].reason);
    assert!(rejected[1].reason.contains("does not match"), "{}", rejected[1].reason);
    assert!(store.workload("Kubernetes//Pod/apps/web").is_some(), "good resource applied");
    assert!(version.has_changed().unwrap());

    handler.apply(Update { resources: vec![], removed: vec![good.resource_name()] }).unwrap();
    assert!(store.workload("Kubernetes//Pod/apps/web").is_none());
}

/// An `istio.security.Match` from a newer Istio: principals, plus a field
/// we do not declare (standing in for `service_accounts`).
#[derive(Clone, PartialEq, prost::Message)]
struct NewerMatch {
    #[prost(message, repeated, tag = "3")]
    principals: Vec<mesh_proto::security::StringMatch>,
    #[prost(string, repeated, tag = "11")]
    unknown: Vec<String>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct NewerClause {
    #[prost(message, repeated, tag = "2")]
    matches: Vec<NewerMatch>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct NewerRule {
    #[prost(message, repeated, tag = "1")]
    clauses: Vec<NewerClause>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct NewerAuthorization {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    namespace: String,
    #[prost(int32, tag = "3")]
    scope: i32,
    #[prost(int32, tag = "4")]
    action: i32,
    #[prost(message, repeated, tag = "5")]
    rules: Vec<NewerRule>,
}

#[test]
fn policies_with_fields_we_do_not_know_fail_closed() {
    use mesh_core::policy::{Connection, evaluate};
    use prost::Message;
    let store = WorkloadStore::new();
    let mut handler = AuthorizationHandler(store.clone());
    let newer = |name: &str, action: i32| {
        let m = NewerMatch {
            principals: vec![mesh_proto::security::StringMatch {
                match_type: Some(mesh_proto::security::string_match::MatchType::Prefix(
                    "cluster.local/".into(),
                )),
            }],
            unknown: vec!["apps/only-this-one".into()],
        };
        let p = NewerAuthorization {
            name: name.into(),
            namespace: "apps".into(),
            scope: 1,
            action,
            rules: vec![NewerRule { clauses: vec![NewerClause { matches: vec![m] }] }],
        };
        let any = Any { type_url: type_url::AUTHORIZATION.into(), value: p.encode_to_vec() };
        (format!("apps/{name}"), any)
    };
    let conn = |from: &str| Connection {
        source_identity: Some(from.parse().unwrap()),
        source_ip: "10.0.0.1".parse().unwrap(),
        destination_ip: "10.0.0.2".parse().unwrap(),
        destination_port: 80,
    };
    // Read without the unknown condition, this ALLOW would let every
    // cluster.local caller in: it allows nobody instead.
    handler.apply(Update { resources: vec![newer("allow", 0)], removed: vec![] }).unwrap();
    let policies = store.policies();
    let caller = conn("spiffe://cluster.local/ns/apps/sa/web");
    assert!(!evaluate(policies.iter().map(|p| p.as_ref()), &caller).allowed());
    // A DENY denies everyone it applies to, not just those it names.
    handler
        .apply(Update { resources: vec![newer("deny", 1)], removed: vec!["apps/allow".into()] })
        .unwrap();
    let policies = store.policies();
    let stranger = conn("spiffe://other.domain/ns/x/sa/y");
    assert!(!evaluate(policies.iter().map(|p| p.as_ref()), &stranger).allowed());
}

#[test]
fn authorization_handler_round_trips_policies() {
    let store = WorkloadStore::new();
    let mut handler = AuthorizationHandler(store.clone());
    let p = policy(
        "apps",
        "deny-all",
        Action::Deny,
        vec![Match { principals: vec![StringMatch::Presence], ..Match::default() }],
    );
    let body = Any::from_msg(&mesh_proto::security::Authorization::from(&p)).unwrap();
    handler.apply(Update { resources: vec![(p.key(), body)], removed: vec![] }).unwrap();
    assert_eq!(store.policies().len(), 1);
    assert_eq!(*store.policies()[0], p);
    handler.apply(Update { resources: vec![], removed: vec![p.key()] }).unwrap();
    assert!(store.policies().is_empty());
}
