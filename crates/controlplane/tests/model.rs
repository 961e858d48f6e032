//! The ambient model from YAML: pods and services as proxies will see them.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use controlplane::config::{ClusterState, parse_documents};
use controlplane::model::{MeshConfig, Model};
use mesh_core::{
    GatewayDestination, NamespacedHostname, NetworkMode, PortMapping, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType,
};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: apps-waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata: {name: sidecars, labels: {istio-injection: enabled, istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-7d4f9-abcde
  namespace: apps
  labels: {app: web, version: v2}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4f9, uid: u1, controller: true}]
spec:
  serviceAccountName: web
  nodeName: node-a
  containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]
status:
  phase: Running
  podIP: 10.0.1.9
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: apps, labels: {istio.io/dataplane-mode: none, istio.io/use-waypoint: none},
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: nightly, uid: u2, controller: true}]}
spec: {nodeName: node-b, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.2.7, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: apps}
spec: {containers: [{name: c, image: x}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: apps}
spec: {containers: [{name: c, image: x}]}
status: {phase: Succeeded, podIP: 10.0.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy}
spec: {hostNetwork: true, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 192.168.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: sidecars}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.3.3}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: admin, port: 9000, targetPort: 9001}, {name: missing, port: 81, targetPort: nope}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: apps, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: apps-waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: apps}
spec: {type: ExternalName, externalName: example.com}
"#;

fn model() -> Model {
    model_of(CLUSTER)
}

fn model_of(yaml: &str) -> Model {
    let (objects, bad) = parse_documents(yaml, "cluster.yaml");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, dup) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    assert!(dup.is_empty());
    Model::compute(&state, &MeshConfig::default())
}

fn workload<'a>(m: &'a Model, name: &str) -> &'a Workload {
    m.workloads.iter().find(|w| w.name == name).unwrap_or_else(|| panic!("no workload {name}"))
}

#[test]
fn running_pods_become_workloads() {
    let m = model();
    let mut names: Vec<&str> = m.workloads.iter().map(|w| w.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["batch", "injected", "old", "web-7d4f9-abcde"],
        "pending and finished pods are not"
    );

    let web = workload(&m, "web-7d4f9-abcde");
    assert_eq!(web.uid, "Kubernetes//Pod/apps/web-7d4f9-abcde");
    assert_eq!(web.addresses, ["10.0.1.9".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(web.identity.to_string(), "spiffe://cluster.local/ns/apps/sa/web");
    assert_eq!(web.protocol, TunnelProtocol::Hbone);
    assert_eq!(web.node, "node-a");
    assert_eq!(web.status, WorkloadStatus::Healthy);
    assert_eq!((web.workload_type, web.workload_name.as_str()), (WorkloadType::Deployment, "web"));
    assert_eq!((web.canonical_name.as_str(), web.canonical_revision.as_str()), ("web", "v2"));
    assert!(
        web.waypoint.is_none(),
        "by default a waypoint takes traffic to services, not to pods (istio.io/waypoint-for)"
    );
    for (takes, pods_bound) in
        [("all", true), ("workload", true), ("service", false), ("none", false)]
    {
        let labelled = CLUSTER.replace(
            "metadata: {name: apps-waypoint, namespace: apps}",
            &format!("metadata: {{name: apps-waypoint, namespace: apps, labels: {{istio.io/waypoint-for: {takes}}}}}"),
        );
        let m = model_of(&labelled);
        let web = workload(&m, "web-7d4f9-abcde");
        assert_eq!(web.waypoint.is_some(), pods_bound, "waypoint-for {takes}");
        if let Some(w) = &web.waypoint {
            match &w.destination {
                GatewayDestination::Hostname(h) => {
                    assert_eq!(h.hostname, "apps-waypoint.apps.svc.cluster.local")
                }
                other => panic!("{other:?}"),
            }
        }
        let service = m.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(service.waypoint.is_some(), takes == "all" || takes == "service", "{takes}");
    }
}

#[test]
fn enrollment_and_opt_outs() {
    let m = model();
    let batch = workload(&m, "batch");
    assert_eq!(batch.protocol, TunnelProtocol::None, "pod opted out of ambient");
    assert!(batch.waypoint.is_none(), "pod opted out of the namespace waypoint");
    assert_eq!(batch.status, WorkloadStatus::Unhealthy);
    assert_eq!((batch.workload_type, batch.workload_name.as_str()), (WorkloadType::Job, "nightly"));
    assert_eq!(batch.identity.service_account(), "default");

    let old = workload(&m, "old");
    assert_eq!(old.protocol, TunnelProtocol::None);
    assert_eq!(old.network_mode, NetworkMode::HostNetwork);
    assert_eq!(old.workload_type, WorkloadType::Pod);

    assert_eq!(workload(&m, "injected").protocol, TunnelProtocol::Hbone, "sidecars speak HBONE");
}

#[test]
fn services_and_their_endpoints_ports() {
    let m = model();
    let mut services: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    services.sort();
    assert_eq!(services, ["headless", "web"], "ExternalName services are not mesh services");
    let web = m.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.hostname, "web.apps.svc.cluster.local");
    assert_eq!(web.vips.len(), 1);
    assert_eq!(
        web.ports[0],
        PortMapping { service_port: 80, target_port: 0 },
        "named: per workload"
    );
    assert!(web.waypoint.is_some(), "namespace waypoint applies to the service");
    let headless = m.services.iter().find(|s| s.name == "headless").unwrap();
    assert!(headless.vips.is_empty());
    assert!(headless.waypoint.is_none(), "service opted out");

    let pod = workload(&m, "web-7d4f9-abcde");
    let key = NamespacedHostname {
        namespace: "apps".into(),
        hostname: "web.apps.svc.cluster.local".into(),
    };
    assert_eq!(
        pod.services[&key],
        [
            PortMapping { service_port: 80, target_port: 8080 },
            PortMapping { service_port: 9000, target_port: 9001 }
        ],
        "named port resolved; a name the pod does not have is left out"
    );
    assert_eq!(pod.services.len(), 2, "web and headless");
    assert!(workload(&m, "batch").services.is_empty());
}

#[test]
fn a_waypoint_sees_only_what_it_fronts() {
    let m = model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let scope = &m.waypoint_scopes["apps/apps-waypoint"];
    let mut expected = vec![
        "apps/web.apps.svc.cluster.local".to_string(),
        "Kubernetes//Pod/apps/web-7d4f9-abcde".to_string(),
    ];
    expected.sort();
    assert_eq!(
        scope.iter().cloned().collect::<Vec<_>>(),
        expected,
        "web and its endpoint; not batch, not headless"
    );

    // The scopes as an xDS filter.
    use controlplane::scopes::{PROXY_TYPE, ProxyScopes, WAYPOINT, node_metadata};
    use xds::NodeFilter;
    let filter = ProxyScopes::default();
    assert!(filter.update(m.waypoint_scopes.clone(), Default::default()));
    assert!(
        !filter.update(m.waypoint_scopes.clone(), Default::default()),
        "unchanged scopes are not a change"
    );
    let node = |pairs: &[(&str, &str)]| mesh_proto::core::Node {
        metadata: Some(node_metadata(pairs)),
        ..Default::default()
    };
    let address = mesh_proto::type_url::ADDRESS;
    let waypoint = node(&[(PROXY_TYPE, "waypoint"), (WAYPOINT, "apps/apps-waypoint")]);
    assert!(filter.allows(&waypoint, address, "apps/web.apps.svc.cluster.local"));
    assert!(!filter.allows(&waypoint, address, "Kubernetes//Pod/apps/batch"));
    assert!(!filter.allows(&waypoint, mesh_proto::type_url::AUTHORIZATION, "apps/anything"));
    let stranger = node(&[(PROXY_TYPE, "waypoint")]);
    assert!(
        !filter.allows(&stranger, address, "apps/web.apps.svc.cluster.local"),
        "unnamed waypoint"
    );
    let ztunnel = node(&[(PROXY_TYPE, "ztunnel")]);
    assert!(filter.allows(&ztunnel, address, "Kubernetes//Pod/apps/batch"));

    // Dry-run policies go only to proxies that evaluate them: any other
    // would enforce them.
    let authorization = mesh_proto::type_url::AUTHORIZATION;
    assert!(filter.allows(&ztunnel, authorization, "apps/dry"));
    assert!(filter.update(m.waypoint_scopes.clone(), ["apps/dry".to_string()].into()));
    assert!(!filter.allows(&ztunnel, authorization, "apps/dry"), "Istio's ztunnel");
    assert!(filter.allows(&ztunnel, authorization, "apps/enforced"));
    use controlplane::scopes::DRY_RUN_AUTHORIZATION;
    let ours = node(&[(PROXY_TYPE, "ztunnel"), (DRY_RUN_AUTHORIZATION, "true")]);
    assert!(filter.allows(&ours, authorization, "apps/dry"));
    assert!(!filter.allows(&waypoint, authorization, "apps/dry"));

    // L7 routes: a waypoint gets those of what it fronts; no other proxy
    // gets any, whatever it says about itself.
    let routes = mesh_proto::type_url::SERVICE_ROUTES;
    assert!(filter.allows(&waypoint, routes, "apps/web.apps.svc.cluster.local"));
    assert!(!filter.allows(&waypoint, routes, "legacy/other.legacy.svc.cluster.local"));
    assert!(!filter.allows(&ztunnel, routes, "apps/web.apps.svc.cluster.local"));
    assert!(
        !filter.allows(&ours, routes, "apps/web.apps.svc.cluster.local"),
        "dry-run flag opens nothing else"
    );

    // L7 policies: a waypoint gets those that reach it, by their own name
    // (never by a service's name that happens to match); no other proxy
    // gets any.
    let l7 = mesh_proto::type_url::L7_AUTHORIZATION;
    let mut scopes = m.waypoint_scopes.clone();
    scopes
        .entry("apps/apps-waypoint".into())
        .or_default()
        .insert(format!("{}apps/readers", controlplane::model::policies::targeted::SCOPE_PREFIX));
    assert!(filter.update(scopes, Default::default()));
    assert!(filter.allows(&waypoint, l7, "apps/readers"));
    assert!(!filter.allows(&waypoint, l7, "apps/writers"));
    assert!(!filter.allows(&waypoint, l7, "apps/web.apps.svc.cluster.local"));
    assert!(!filter.allows(&waypoint, address, "authz~apps/readers"));
    assert!(!filter.allows(&ztunnel, l7, "apps/readers"));
    assert!(!filter.allows(&ours, l7, "apps/readers"));
}

#[test]
fn bindings_to_missing_waypoints_are_kept_so_traffic_is_refused_with_a_warning() {
    let without_gateway: String = CLUSTER
        .split("---")
        .filter(|d| !d.contains("kind: Gateway"))
        .collect::<Vec<_>>()
        .join("---");
    let (objects, bad) = parse_documents(&without_gateway, "cluster.yaml");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    let m = Model::compute(&state, &MeshConfig::default());
    // Kept: proxies cannot resolve it and refuse, rather than go direct.
    let kept = workload(&m, "web-7d4f9-abcde").waypoint.clone();
    assert!(
        matches!(&kept.as_ref().map(|w| &w.destination), Some(GatewayDestination::Hostname(h)) if h.hostname.starts_with("apps-waypoint.apps.")),
        "{kept:?}"
    );
    let web = m.services.iter().find(|s| s.name == "web").map(|s| s.waypoint.clone());
    assert!(matches!(web, Some(Some(_))), "{web:?}");
    let warned: Vec<String> = m.warnings.iter().map(|w| w.object.to_string()).collect();
    assert!(warned.contains(&"Pod apps/web-7d4f9-abcde".to_string()), "{warned:?}");
    assert!(warned.contains(&"Service apps/web".to_string()), "{warned:?}");
    assert!(m.warnings[0].message.contains("does not exist"));
    assert!(m.warnings[0].message.contains("refused"), "{}", m.warnings[0].message);
}

#[test]
fn service_entries_become_services_and_outside_endpoints() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: apps}
spec:
  hosts: [payments.example.com]
  addresses: [240.0.0.10, 240.0.0.0/24]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 203.0.113.7, ports: {https: 8443}}, {address: pay.example.net}]
"#;
    let (objects, bad) = parse_documents(yaml, "se.yaml");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    let m = Model::compute(&state, &MeshConfig::default());
    let service = m.services.iter().find(|s| s.hostname == "payments.example.com").unwrap();
    assert_eq!(service.key().to_string(), "apps/payments.example.com");
    assert_eq!(service.vips.len(), 1, "the CIDR is not a VIP");
    assert_eq!(service.ports, [PortMapping { service_port: 443, target_port: 443 }]);
    let endpoint = workload(&m, "payments");
    assert_eq!(endpoint.protocol, TunnelProtocol::None, "outside the mesh");
    assert_eq!(
        endpoint.uid,
        "Kubernetes/networking.istio.io/ServiceEntry/apps/payments/203.0.113.7"
    );
    let key = service.key();
    assert_eq!(endpoint.services[&key], [PortMapping { service_port: 443, target_port: 8443 }]);
    let messages: Vec<&str> = m.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("CIDRs")));
    assert!(messages.iter().any(|m| m.contains("DNS endpoints")));
}

#[test]
fn endpoint_slices_fill_selector_less_services() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: db, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: pg-0, namespace: db}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.5.5}
---
apiVersion: v1
kind: Service
metadata: {name: pg, namespace: db}
spec: {clusterIP: 10.96.5.5, ports: [{name: sql, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pg-abc, namespace: db, labels: {kubernetes.io/service-name: pg}}
addressType: IPv4
ports: [{name: sql, port: 15432}]
endpoints:
- addresses: [10.0.5.5]
  conditions: {ready: true}
- addresses: [192.168.9.9]
  conditions: {ready: false}
"#;
    let (objects, bad) = parse_documents(yaml, "slices.yaml");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    let m = Model::compute(&state, &MeshConfig::default());
    let key =
        NamespacedHostname { namespace: "db".into(), hostname: "pg.db.svc.cluster.local".into() };
    let pod = workload(&m, "pg-0");
    assert_eq!(pod.services[&key], [PortMapping { service_port: 5432, target_port: 15432 }]);
    let outside = workload(&m, "pg-abc");
    assert_eq!(outside.protocol, TunnelProtocol::None);
    assert_eq!(outside.status, WorkloadStatus::Unhealthy);
    assert_eq!(outside.addresses, ["192.168.9.9".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(outside.services[&key], [PortMapping { service_port: 5432, target_port: 15432 }]);
}

fn same(a: &Model, b: &Model) {
    assert_eq!(a.workloads, b.workloads);
    assert_eq!(a.services, b.services);
    assert_eq!(a.policies, b.policies);
    assert_eq!(a.warnings, b.warnings);
    assert_eq!(a.waypoint_scopes, b.waypoint_scopes);
}

#[test]
fn updating_after_a_change_equals_computing_afresh() {
    let mesh = MeshConfig::default();
    let (objects, _) = parse_documents(CLUSTER, "cluster.yaml");
    let (before, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    let model = Model::compute(&before, &mesh);

    // Pods only: one changes readiness, one goes away, one arrives.
    let mut after = before.clone();
    let web = after.pods.get_mut(&("apps".to_string(), "web-7d4f9-abcde".to_string())).unwrap();
    web.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    after.pods.remove(&("legacy".to_string(), "old".to_string()));
    let mut new_pod = after.pods[&("apps".to_string(), "web-7d4f9-abcde".to_string())].clone();
    new_pod.metadata.name = Some("web-7d4f9-fghij".into());
    new_pod.status.as_mut().unwrap().pod_ip = Some("10.0.1.99".into());
    after.pods.insert(("apps".to_string(), "web-7d4f9-fghij".to_string()), new_pod);
    let updated = model.update(&before, &after, &mesh);
    same(&updated, &Model::compute(&after, &mesh));
    assert_eq!(workload(&updated, "web-7d4f9-abcde").status, WorkloadStatus::Unhealthy);
    assert!(updated.workloads.iter().all(|w| w.name != "old"));

    // Not only pods: a namespace label changes every pod in it.
    let mut relabeled = after.clone();
    let ns = relabeled.namespaces.get_mut("apps").unwrap();
    ns.metadata.labels.as_mut().unwrap().remove("istio.io/dataplane-mode");
    let updated_again = updated.update(&after, &relabeled, &mesh);
    same(&updated_again, &Model::compute(&relabeled, &mesh));
    assert_eq!(workload(&updated_again, "web-7d4f9-abcde").protocol, TunnelProtocol::None);
}

#[test]
fn workloads_behind_a_waypoint_refuse_every_caller_but_the_waypoint_unless_the_namespace_opts_out()
{
    use mesh_core::Identity;
    use mesh_core::policy::{Connection, evaluate};
    let m = model();
    let web = workload(&m, "web-7d4f9-abcde");
    let guard_key = "apps/waypoint-only~apps.apps-waypoint";
    assert!(web.authorization_policies.iter().any(|p| p == guard_key), "{web:?}");
    let guard = m.policies.iter().find(|p| p.key() == guard_key).expect("the guard");
    let decide = |caller: Option<Identity>| {
        evaluate(
            [guard],
            &Connection {
                source_identity: caller,
                source_ip: "10.0.9.9".parse().unwrap(),
                destination_ip: "10.0.1.9".parse().unwrap(),
                destination_port: 8080,
            },
        )
        .allowed()
    };
    let id = |sa: &str| Some(Identity::new("cluster.local", "apps", sa).unwrap());
    assert!(decide(id("apps-waypoint")), "the waypoint itself");
    assert!(!decide(id("web")), "another mesh workload, around the waypoint");
    assert!(!decide(None), "plaintext");
    // Not enforced by a ztunnel: no guard.
    assert!(workload(&m, "batch").authorization_policies.iter().all(|p| !p.contains('~')));

    // The namespace opts out for a migration: no guard.
    let opted = CLUSTER.replace(
        "istio.io/use-waypoint: apps-waypoint}}",
        "istio.io/use-waypoint: apps-waypoint, mesh.dev/waypoint-bypass: allow}}",
    );
    let m = model_of(&opted);
    assert!(
        workload(&m, "web-7d4f9-abcde").authorization_policies.iter().all(|p| !p.contains('~'))
    );
    assert!(m.policies.iter().all(|p| !p.name.starts_with("waypoint-only~")));
}
