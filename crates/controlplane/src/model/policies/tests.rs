//! Policy translation, checked by evaluating the result.

use mesh_core::policy::{Authorization, Connection, PolicyScope, evaluate};

use crate::config::{BadObject, ClusterState, parse_documents};
use crate::model::{MeshConfig, Model};

fn model(yaml: &str) -> Model {
    let (m, bad) = model_and_refused(yaml);
    assert!(bad.is_empty(), "{bad:?}");
    m
}

/// The model, with stand-ins for refused objects, and what was refused.
fn model_and_refused(yaml: &str) -> (Model, Vec<BadObject>) {
    let (objects, bad) = parse_documents(yaml, "test.yaml");
    let (state, dup) =
        ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".to_string())));
    assert!(dup.is_empty());
    (Model::compute(&state, &MeshConfig::default()), bad)
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
    assert_eq!(m.l7_policies.len(), 1, "the targeted one is the waypoint's");
    let messages: Vec<&str> = m.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(messages.iter().any(|w| w.contains("AUDIT")), "{messages:?}");
    assert!(messages.iter().any(|w| w.contains("does not exist yet")), "{messages:?}");
}

#[test]
fn when_conditions_and_ip_blocks() {
    let m = model(&ap(
        "allow-lan",
        "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/24]}}], when: [{key: destination.port, values: ['8080']}, {key: source.namespace, notValues: [other]}]}]}",
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
    let strict = policy(&m, "istio-system/istio_converted_static_strict");
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    let legacy = m.workloads.iter().find(|w| w.name == "legacy").unwrap();
    assert_eq!(web.authorization_policies, ["istio-system/istio_converted_static_strict"]);
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

// === fail closed (issue #17) ===

#[test]
fn service_accounts_are_enforced_not_ignored() {
    let m = model(&ap(
        "allow-sa",
        "{rules: [{from: [{source: {serviceAccounts: [apps/sleep]}}]}, {from: [{source: {serviceAccounts: [curl]}}]}]}",
    ));
    let p = policy(&m, "apps/allow-sa");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert!(evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(
        !evaluate([p], &conn(Some(OTHER), "10.0.0.5", 80)).allowed(),
        "other/curl is not apps/curl: a bare name is the policy's namespace"
    );
    assert!(
        evaluate([p], &conn(Some("spiffe://cluster.local/ns/apps/sa/curl"), "10.0.0.5", 80))
            .allowed()
    );
    assert!(!evaluate([p], &conn(None, "10.0.0.5", 80)).allowed(), "plaintext has no account");

    let m =
        model(&ap("not-sa", "{rules: [{from: [{source: {notServiceAccounts: [apps/sleep]}}]}]}"));
    let p = policy(&m, "apps/not-sa");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(evaluate([p], &conn(Some(OTHER), "10.0.0.5", 80)).allowed());

    let m = model(&ap("bad-sa", "{rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]}"));
    assert!(policy(&m, "apps/bad-sa").rules.is_empty(), "unreadable account: ALLOW rule dropped");
}

#[test]
fn an_empty_source_never_allows_everyone() {
    let m = model(&ap("empty-source", "{rules: [{from: [{source: {}}]}]}"));
    let p = policy(&m, "apps/empty-source");
    assert!(p.rules.is_empty(), "{p:?}");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(m.warnings[0].message.contains("source is empty"), "{:?}", m.warnings);

    let m = model(&ap("empty-op", "{action: DENY, rules: [{to: [{operation: {}}]}]}"));
    assert!(
        !evaluate([policy(&m, "apps/empty-op")], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(),
        "DENY widens"
    );
}

#[test]
fn remote_ip_is_l7_and_fails_closed() {
    let m = model(&ap(
        "allow-remote",
        "{rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/24]}}]}]}",
    ));
    assert!(
        !evaluate([policy(&m, "apps/allow-remote")], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed()
    );
    let m = model(&ap(
        "allow-when-remote",
        "{rules: [{when: [{key: remote.ip, values: [10.0.0.0/24]}]}]}",
    ));
    assert!(
        !evaluate([policy(&m, "apps/allow-when-remote")], &conn(Some(SLEEP), "10.0.0.5", 80))
            .allowed()
    );
    let m = model(&ap(
        "deny-remote",
        "{action: DENY, rules: [{from: [{source: {notRemoteIpBlocks: [10.0.0.0/24]}}]}]}",
    ));
    assert!(
        !evaluate([policy(&m, "apps/deny-remote")], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed(),
        "DENY widens to all"
    );
}

#[test]
fn refused_policies_deny_what_they_select() {
    let yaml = format!(
        "{PODS}---\n{}",
        ap(
            "typo",
            "{selector: {matchLabels: {app: web}}, rules: [{from: [{source: {principal: [x]}}]}]}"
        )
    );
    let (m, bad) = model_and_refused(&yaml);
    assert_eq!(bad.len(), 1, "{bad:?}");
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    let legacy = m.workloads.iter().find(|w| w.name == "legacy").unwrap();
    assert_eq!(web.authorization_policies, ["apps/typo"]);
    assert!(legacy.authorization_policies.is_empty(), "only what the selector names");
    let p = policy(&m, "apps/typo");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
    assert!(!evaluate([p], &conn(None, "10.0.0.5", 80)).allowed());

    // No selector readable: the whole namespace.
    let (m, _) = model_and_refused(&ap("typo", "{action: DENNY, rules: [{}]}"));
    let p = policy(&m, "apps/typo");
    assert_eq!(p.scope, PolicyScope::Namespace);
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
}

#[test]
fn a_refused_peer_authentication_means_strict() {
    let yaml = format!(
        "{PODS}---\n{}",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: apps}\nspec: {mtls: {mode: strict}}\n"
    );
    let (m, bad) = model_and_refused(&yaml);
    assert_eq!(bad.len(), 1);
    for w in &m.workloads {
        assert_eq!(
            w.authorization_policies,
            ["istio-system/istio_converted_static_strict"],
            "{}",
            w.name
        );
    }
}

#[test]
fn targeted_and_audit_policies_are_not_enforced_by_node_proxies() {
    let yaml = format!(
        "{PODS}---\n{}---\n{}",
        ap(
            "one-target",
            "{targetRef: {kind: Service, group: '', name: web}, action: DENY, rules: [{}]}"
        ),
        ap("audit", "{selector: {matchLabels: {app: web}}, action: AUDIT, rules: [{}]}"),
    );
    let m = model(&yaml);
    assert!(m.policies.is_empty(), "{:?}", m.policies);
    assert!(m.workloads.iter().all(|w| w.authorization_policies.is_empty()));
    let messages: Vec<&str> = m.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(messages.iter().any(|w| w.contains("AUDIT")), "{messages:?}");
    assert!(messages.iter().any(|w| w.contains("no waypoint enforces")), "{messages:?}");
}

fn dry_policy(name: &str, value: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: apps, annotations: {{istio.io/dry-run: '{value}'}}}}\nspec: {{selector: {{matchLabels: {{app: web}}}}, action: DENY, rules: [{{}}]}}\n"
    )
}

#[test]
fn dry_run_policies_are_sent_marked_and_never_decide() {
    let yaml = format!(
        "{PODS}---\n{}---\n{}---\n{}",
        dry_policy("dry", "true"),
        dry_policy("typo", "ture"),
        dry_policy("disabled", "false")
    );
    let m = model(&yaml);
    let dry = policy(&m, "apps/dry");
    assert!(dry.dry_run, "{dry:?}");
    assert!(!policy(&m, "apps/disabled").dry_run);
    // A value that is not a boolean never loosens a policy: enforced, warned.
    assert!(!policy(&m, "apps/typo").dry_run);
    let messages: Vec<&str> = m.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(messages.iter().any(|w| w.contains("\"ture\" is not a boolean")), "{messages:?}");
    assert_eq!(messages.iter().filter(|w| w.contains("dry-run")).count(), 1, "{messages:?}");
    // Selected like any other policy, so the workload's proxy finds it.
    let web = m.workloads.iter().find(|w| w.name.starts_with("web")).unwrap();
    assert!(web.authorization_policies.contains(&"apps/dry".to_string()), "{web:?}");
    // The dry run reports a denial and decides nothing.
    let decision = evaluate([dry], &conn(Some(SLEEP), "10.0.0.5", 8080));
    assert!(decision.allowed());
    assert!(decision.dry_run_change().is_some(), "{decision:?}");
    let names = super::dry_run_names(&m.policies);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["apps/dry"]);
}

#[test]
fn custom_policies_deny_what_their_rules_match() {
    let m = model(&ap(
        "ext",
        "{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {ports: ['8080']}}]}]}",
    ));
    let p = policy(&m, "apps/ext");
    assert!(!evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 8080)).allowed());
    assert!(evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 80)).allowed());
}

fn peer(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: apps}}\nspec: {spec}\n"
    )
}

#[test]
fn port_level_mtls_is_enforced_both_ways() {
    // A STRICT port under a PERMISSIVE workload.
    let yaml = format!(
        "{PODS}---\n{}",
        peer(
            "web",
            "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {'8080': {mode: STRICT}}}"
        )
    );
    let m = model(&yaml);
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    assert_eq!(web.authorization_policies, ["apps/peer_authentication_web"]);
    let p = policy(&m, "apps/peer_authentication_web");
    assert!(!evaluate([p], &conn(None, "10.0.0.5", 8080)).allowed(), "plaintext refused on 8080");
    assert!(evaluate([p], &conn(None, "10.0.0.5", 80)).allowed(), "plaintext fine elsewhere");
    assert!(evaluate([p], &conn(Some(SLEEP), "10.0.0.5", 8080)).allowed());

    // A PERMISSIVE port under a STRICT namespace (the workload's own mode unset).
    let yaml = format!(
        "{PODS}---\n{}---\n{}",
        peer("default", "{mtls: {mode: STRICT}}"),
        peer(
            "web",
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {'9090': {mode: PERMISSIVE}}}"
        )
    );
    let m = model(&yaml);
    let web = m.workloads.iter().find(|w| w.name == "web").unwrap();
    let legacy = m.workloads.iter().find(|w| w.name == "legacy").unwrap();
    assert_eq!(web.authorization_policies, ["apps/peer_authentication_web"]);
    assert_eq!(legacy.authorization_policies, ["istio-system/istio_converted_static_strict"]);
    let p = policy(&m, "apps/peer_authentication_web");
    assert!(evaluate([p], &conn(None, "10.0.0.5", 9090)).allowed(), "plaintext accepted on 9090");
    assert!(!evaluate([p], &conn(None, "10.0.0.5", 80)).allowed(), "refused elsewhere");
}
