//! Protobuf ↔ domain conversions: round trips, typed errors, garbage.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_proto::security as spb;
use mesh_proto::workload as pb;
use proptest::prelude::*;
use prost::Message;

use crate::policy::{Action, Authorization, Clause, IpNet, Match, PolicyScope, Rule, StringMatch};
use crate::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    any::<IpAddr>()
}

fn identity() -> impl Strategy<Value = Identity> {
    (name(), name(), name()).prop_map(|(td, ns, sa)| Identity::new(&td, &ns, &sa).unwrap())
}

fn gateway() -> impl Strategy<Value = GatewayAddress> {
    let dest = prop_oneof![
        (name(), name()).prop_map(|(namespace, hostname)| GatewayDestination::Hostname(
            NamespacedHostname { namespace, hostname }
        )),
        (name(), ip()).prop_map(|(network, address)| GatewayDestination::Address(NetworkAddress {
            network,
            address
        })),
    ];
    (dest, 1u16..).prop_map(|(destination, hbone_port)| GatewayAddress { destination, hbone_port })
}

fn ports() -> impl Strategy<Value = Vec<PortMapping>> {
    proptest::collection::vec(
        (1u16.., any::<u16>())
            .prop_map(|(service_port, target_port)| PortMapping { service_port, target_port }),
        0..3,
    )
}

prop_compose! {
    fn workload()(
        uid in name(), name in name(), identity in identity(),
        addresses in proptest::collection::vec(ip(), 1..3),
        hbone in any::<bool>(), waypoint in proptest::option::of(gateway()),
        node in name(), services in proptest::collection::btree_map((name(), name()), ports(), 0..3),
        policies in proptest::collection::vec(name(), 0..3), healthy in any::<bool>(),
        capacity in any::<u32>(), kind in 0..4,
    ) -> Workload {
        Workload {
            uid,
            name,
            namespace: identity.namespace().to_string(),
            addresses,
            hostname: String::new(),
            network: String::new(),
            protocol: if hbone { TunnelProtocol::Hbone } else { TunnelProtocol::None },
            identity,
            waypoint,
            network_gateway: None,
            node,
            canonical_name: "app".into(),
            canonical_revision: "v1".into(),
            workload_type: [WorkloadType::Deployment, WorkloadType::CronJob, WorkloadType::Pod, WorkloadType::Job][kind as usize],
            workload_name: "app".into(),
            native_tunnel: false,
            services: services
                .into_iter()
                .map(|((namespace, hostname), p)| (NamespacedHostname { namespace, hostname }, p))
                .collect::<BTreeMap<_, _>>(),
            authorization_policies: policies,
            status: if healthy { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy },
            cluster_id: "Kubernetes".into(),
            locality: Some(Locality { region: "r".into(), zone: "z".into(), subzone: String::new() }),
            network_mode: NetworkMode::Standard,
            capacity,
        }
    }
}

prop_compose! {
    fn service()(
        name in name(), namespace in name(), vips in proptest::collection::vec((name(), ip()), 0..3),
        ports in ports(), waypoint in proptest::option::of(gateway()), strict in any::<bool>(),
    ) -> Service {
        Service {
            hostname: format!("{name}.{namespace}.svc.cluster.local"),
            name,
            namespace,
            vips: vips.into_iter().map(|(network, address)| NetworkAddress { network, address }).collect(),
            ports,
            subject_alt_names: vec![],
            waypoint,
            load_balancing: Some(LoadBalancing {
                routing_preference: vec![Scope::Network, Scope::Node],
                mode: if strict { LoadBalancingMode::Strict } else { LoadBalancingMode::Failover },
                health_policy: HealthPolicy::OnlyHealthy,
            }),
            ip_families: IpFamilies::Automatic,
            canonical: strict,
        }
    }
}

fn string_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        name().prop_map(StringMatch::Exact),
        name().prop_map(StringMatch::Prefix),
        name().prop_map(StringMatch::Suffix),
        Just(StringMatch::Presence),
    ]
}

fn ip_net() -> impl Strategy<Value = IpNet> {
    (ip(), 0u8..=128).prop_map(|(a, p)| {
        let max = if a.is_ipv4() { 32 } else { 128 };
        IpNet::new(a, p.min(max)).unwrap()
    })
}

prop_compose! {
    fn a_match()(
        namespaces in proptest::collection::vec(string_match(), 0..2),
        not_principals in proptest::collection::vec(string_match(), 0..2),
        source_ips in proptest::collection::vec(ip_net(), 0..2),
        not_destination_ips in proptest::collection::vec(ip_net(), 0..2),
        destination_ports in proptest::collection::vec(1u16.., 0..3),
    ) -> Match {
        Match { namespaces, not_principals, source_ips, not_destination_ips, destination_ports, ..Match::default() }
    }
}

prop_compose! {
    fn authorization()(
        name in name(), namespace in name(), deny in any::<bool>(), dry_run in any::<bool>(), scope in 0..3,
        rules in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(a_match(), 0..3), 0..3), 0..3),
    ) -> Authorization {
        Authorization {
            name,
            namespace,
            scope: [PolicyScope::Global, PolicyScope::Namespace, PolicyScope::WorkloadSelector][scope as usize],
            action: if deny { Action::Deny } else { Action::Allow },
            rules: rules
                .into_iter()
                .map(|clauses| Rule { clauses: clauses.into_iter().map(|matches| Clause { matches }).collect() })
                .collect(),
            dry_run,
        }
    }
}

proptest! {
    #[test]
    fn workloads_round_trip(w in workload()) {
        let proto = pb::Workload::from(&w);
        let back = Workload::try_from(&proto).unwrap();
        prop_assert_eq!(&back, &w);
        // And through bytes, as they travel.
        let decoded = pb::Workload::decode(proto.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(pb::Workload::from(&Workload::try_from(&decoded).unwrap()), proto);
    }

    #[test]
    fn services_round_trip(s in service()) {
        let address = Address::Service(Box::new(s));
        let proto = pb::Address::from(&address);
        prop_assert_eq!(Address::try_from(&proto).unwrap(), address);
    }

    #[test]
    fn policies_round_trip(a in authorization()) {
        let proto = spb::Authorization::from(&a);
        let decoded = spb::Authorization::decode(proto.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(Authorization::try_from(&decoded).unwrap(), a);
    }

    #[test]
    fn garbage_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(a) = pb::Address::decode(bytes.as_slice()) {
            let _ = Address::try_from(&a);
        }
        if let Ok(p) = spb::Authorization::decode(bytes.as_slice()) {
            let _ = Authorization::try_from(&p);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(w in workload(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = pb::Address::from(&Address::Workload(Box::new(w))).encode_to_vec();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] ^= value;
        }
        if let Ok(a) = pb::Address::decode(bytes.as_slice()) {
            let _ = Address::try_from(&a);
        }
    }
}

fn minimal_workload() -> pb::Workload {
    pb::Workload {
        uid: "cluster/pod/ns1/p".into(),
        namespace: "ns1".into(),
        addresses: vec![vec![10, 0, 0, 1]],
        ..Default::default()
    }
}

#[test]
fn elided_trust_domain_and_service_account_take_defaults() {
    let w = Workload::try_from(&minimal_workload()).unwrap();
    assert_eq!(w.identity.to_string(), "spiffe://cluster.local/ns/ns1/sa/default");
    assert_eq!(w.capacity, 1);
}

#[test]
fn each_bad_field_is_named() {
    let cases: Vec<(pb::Workload, ConvertError)> = vec![
        (
            pb::Workload { addresses: vec![vec![1, 2, 3]], ..minimal_workload() },
            ConvertError::BadIp { field: "workload.addresses", len: 3 },
        ),
        (
            pb::Workload { tunnel_protocol: 7, ..minimal_workload() },
            ConvertError::UnknownEnum { field: "workload.tunnel_protocol", value: 7 },
        ),
        (
            pb::Workload { uid: String::new(), ..minimal_workload() },
            ConvertError::Missing("workload.uid"),
        ),
        (
            pb::Workload { addresses: vec![], ..minimal_workload() },
            ConvertError::Missing("workload.addresses or workload.hostname"),
        ),
        (
            pb::Workload {
                services: [("no-slash".to_string(), pb::PortList::default())].into(),
                ..minimal_workload()
            },
            ConvertError::BadNamespacedName { field: "services", value: "no-slash".into() },
        ),
        (
            pb::Workload {
                services: [(
                    "ns/h".to_string(),
                    pb::PortList { ports: vec![pb::Port { service_port: 70000, target_port: 1 }] },
                )]
                .into(),
                ..minimal_workload()
            },
            ConvertError::BadPort { field: "ports.service_port", value: 70000 },
        ),
        (
            pb::Workload {
                waypoint: Some(pb::GatewayAddress { destination: None, hbone_mtls_port: 15008 }),
                ..minimal_workload()
            },
            ConvertError::Missing("workload.waypoint"),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(Workload::try_from(&proto).unwrap_err(), expected);
        assert!(!expected.to_string().is_empty());
    }
    let bad_sa = pb::Workload { service_account: "Not_Valid".into(), ..minimal_workload() };
    assert!(matches!(Workload::try_from(&bad_sa), Err(ConvertError::Identity(_))));
    assert_eq!(
        Address::try_from(&pb::Address { r#type: None }).unwrap_err(),
        ConvertError::Missing("address.type")
    );
}

#[test]
fn bad_policy_fields_are_named() {
    let base =
        spb::Authorization { name: "p".into(), namespace: "ns".into(), ..Default::default() };
    let with_match = |m: spb::Match| spb::Authorization {
        rules: vec![spb::Rule { clauses: vec![spb::Clause { matches: vec![m] }] }],
        ..base.clone()
    };
    assert_eq!(
        Authorization::try_from(&spb::Authorization { action: 9, ..base.clone() }).unwrap_err(),
        ConvertError::UnknownEnum { field: "authorization.action", value: 9 }
    );
    assert_eq!(
        Authorization::try_from(&with_match(spb::Match {
            source_ips: vec![spb::Address { address: vec![10, 0, 0, 0], length: 33 }],
            ..Default::default()
        }))
        .unwrap_err(),
        ConvertError::BadPrefix {
            field: "match.source_ips",
            address: "10.0.0.0".parse().unwrap(),
            length: 33
        }
    );
    assert_eq!(
        Authorization::try_from(&with_match(spb::Match {
            principals: vec![spb::StringMatch { match_type: None }],
            ..Default::default()
        }))
        .unwrap_err(),
        ConvertError::Missing("match.principals")
    );
    assert_eq!(
        Authorization::try_from(&with_match(spb::Match {
            destination_ports: vec![0],
            ..Default::default()
        }))
        .unwrap_err(),
        ConvertError::BadPort { field: "match.destination_ports", value: 0 }
    );
}
