//! Policy translation, checked by evaluating the result.

use mesh_core::policy::{Authorization, Connection, PolicyScope, evaluate};

use crate::config::{ClusterState, parse_documents};
use crate::model::{MeshConfig, Model};

fn model(yaml: &str) -> Model {
    let (objects, bad) = parse_documents(yaml, "test.yaml");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, dup) =
        ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".to_string())));
    assert!(dup.is_empty());
    Model::compute(&state, &MeshConfig::default())
}

fn policy<'a>(m: &'a Model, key: &str) -> &'a Authorization {
    m.policies
        .iter()
        .find(|p| p.key() == key)
        .unwrap_or_else(|| panic!("no policy {key}: {:?}", m.policies))
}

fn conn(from: Option<&str>, src: &str, port: u16) -> Connection {
    Connection {
        source_identity: from.map(|f| f.parse().unwrap()),
        source_ip: src.parse().unwrap(),
        destination_ip: "10.0.1.9".parse().unwrap(),
        destination_port: port,
    }
}

const SLEEP: &str = "spiffe://cluster.local/ns/apps/sa/sleep";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/curl";

fn ap(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec: {spec}\n"
    )
}

#[test]
fn l4_allow_translates_and_evaluates() {
    let m = model(&ap(
        "allow-sleep",
        "{rules: [{from: [{source: {principals: [cluster.local/ns/apps/sa/sleep]}}], to: [{operation: {ports: ['8080']}}]}]}",
    ));
    let p = policy(&m, "apps/allow-sleep");
    assert_eq!(p.scope, PolicyScope::Namespace);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert!(evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 8080)).allowed());
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 9090)).allowed());
    assert!(!evaluate([p], &conn(Some(OTHER), "10.0.0.5", 8080)).allowed());
    assert!(!evaluate([p], &conn(None, "10.0.0.5", 8080)).allowed());
}

#[test]
fn allow_rules_with_l7_conditions_are_dropped() {
    let m = model(&ap(
        "allow-get",
        "{rules: [{from: [{source: {namespaces: [apps]}}], to: [{operation: {methods: [GET]}}]}]}",
    ));
    let p = policy(&m, "apps/allow-get");
    assert!(p.rules.is_empty(), "the only rule is dropped: {p:?}");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(), "allows nothing now");
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].message.contains("operation.methods"), "{:?}", m.warnings);
    assert!(m.warnings[0].message.contains("allows less"));
    assert_eq!(m.warnings[0].object.to_string(), "AuthorizationPolicy apps/allow-get");
}

#[test]
fn deny_rules_lose_only_their_l7_conditions() {
    let m = model(&ap(
        "deny-other-admin",
        "{action: DENY, rules: [{from: [{source: {namespaces: [other]}}], to: [{operation: {paths: [/admin]}}]}]}",
    ));
    let p = policy(&m, "apps/deny-other-admin");
    assert!(
        !evaluate([p], &conn(Some(OTHER), "10.0.0.5", 80)).allowed(),
        "denied whatever the path"
    );
    assert!(
        evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(),
        "other namespaces unaffected"
    );
    assert!(m.warnings[0].message.contains("denies more"), "{:?}", m.warnings);
}

#[test]
fn a_deny_made_only_of_l7_conditions_denies_everything_it_selects() {
    let m =
        model(&ap("deny-admin", "{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}"));
    let p = policy(&m, "apps/deny-admin");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(!evaluate([p], &conn(None, "192.168.0.1", 443)).allowed());
    assert_eq!(m.warnings.len(), 1);
}

#[test]
fn unsupported_actions_and_waypoint_policies_are_skipped_with_a_warning() {
    let m = model(&format!(
        "{}---\n{}",
        ap("audit", "{action: AUDIT, rules: [{}]}"),
        ap("for-waypoint", "{targetRefs: [{kind: Gateway, name: waypoint}], rules: [{}]}")
    ));
    assert!(m.policies.is_empty(), "{:?}", m.policies);
    assert_eq!(m.warnings.len(), 2);
}

#[test]
fn when_conditions_and_ip_blocks() {
    let m = model(&ap(
        "allow-lan",
        "{rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/24]}}], when: [{key: destination.port, values: ['8080']}, {key: source.namespace, notValues: [other]}]}]}",
    ));
    let p = policy(&m, "apps/allow-lan");
    assert!(evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 8080)).allowed());
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.9.5", 8080)).allowed(), "outside the block");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(), "other port");
    assert!(!evaluate([p], &conn(Some(OTHER), "10.0.0.5", 8080)).allowed(), "excluded namespace");

    let m = model(&ap("bad-block", "{rules: [{from: [{source: {ipBlocks: [not-an-ip]}}]}]}"));
    assert!(policy(&m, "apps/bad-block").rules.is_empty(), "unparsable ALLOW rule dropped");
    assert!(m.warnings[0].message.contains("not an IP"), "{:?}", m.warnings);
}

#[test]
fn empty_rules_and_patterns() {
    let m =
        model(&format!("{}---\n{}", ap("allow-nothing", "{}"), ap("allow-all", "{rules: [{}]}")));
    assert!(
        !evaluate([policy(&m, "apps/allow-nothing")], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed()
    );
    assert!(evaluate([policy(&m, "apps/allow-all")], &conn(None, "10.0.0.5", 80)).allowed());

    let m = model(&ap(
        "prefix",
        "{rules: [{from: [{source: {principals: ['cluster.local/ns/apps/*']}}]}]}",
    ));
    assert!(evaluate([policy(&m, "apps/prefix")], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(!evaluate([policy(&m, "apps/prefix")], &conn(Some(OTHER), "10.0.0.5", 80)).allowed());
}

const PODS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps, labels: {app: web}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.9}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: apps, labels: {app: legacy}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.10}
";

#[test]
fn scopes_and_selected_policies() {
    let yaml = format!(
        "{PODS}---\n{}---\n{}",
        ap("web-only", "{selector: {matchLabels: {app: web}}, rules: [{}]}"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-wide, namespace: istio-system}\nspec: {action: DENY, rules: [{to: [{operation: {ports: ['22']}}]}]}\n"
    );
    let m = model(&yaml);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(policy(&m, "apps/web-only").scope, PolicyScope::WorkloadSelector);
    assert_eq!(policy(&m, "istio-system/mesh-wide").scope, PolicyScope::Global);
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    let legacy = m.workloads.iter().find(|w| w.name == "legacy").unwrap();
    assert_eq!(web.authorization_policies, ["apps/web-only"]);
    assert!(legacy.authorization_policies.is_empty());
}

#[test]
fn strict_mtls_denies_plaintext_where_it_applies() {
    let yaml = format!(
        "{PODS}---\n{}---\n{}",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: apps}\nspec: {mtls: {mode: STRICT}}\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: legacy, namespace: apps}\nspec: {selector: {matchLabels: {app: legacy}}, mtls: {mode: PERMISSIVE}}\n"
    );
    let m = model(&yaml);
    let strict = policy(&m, "istio-system/strict-mtls");
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    let legacy = m.workloads.iter().find(|w| w.name == "legacy").unwrap();
    assert_eq!(web.authorization_policies, ["istio-system/strict-mtls"]);
    assert!(legacy.authorization_policies.is_empty(), "the workload's PERMISSIVE wins");
    assert!(!evaluate([strict], &conn(None, "10.0.0.5", 80)).allowed(), "plaintext refused");
    assert!(evaluate([strict], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(), "mTLS allowed");
}

#[test]
fn a_selector_matching_no_pod_is_reported() {
    let yaml = format!(
        "{PODS}---\n{}",
        ap("nobody", "{selector: {matchLabels: {app: ghost}}, rules: [{}]}")
    );
    let m = model(&yaml);
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    assert!(m.warnings[0].message.contains("matches no running pod"));
    assert_eq!(m.warnings[0].object.to_string(), "AuthorizationPolicy apps/nobody");
}
