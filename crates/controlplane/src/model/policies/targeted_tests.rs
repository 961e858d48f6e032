//! AuthorizationPolicies with `targetRefs`, from YAML as users write it to
//! the `mesh.l7.Authorization`s waypoints are sent.

#![allow(clippy::unwrap_used)]

use mesh_proto::l7 as proto;

use super::SCOPE_PREFIX;
use crate::config::{ClusterState, parse_documents};
use crate::model::{MeshConfig, Model};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: apps}
spec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: apps, labels: {app: reviews}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: apps, labels: {istio.io/use-waypoint: second}}
spec: {clusterIP: 10.96.0.10, selector: {app: reviews}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: apps}
spec: {clusterIP: 10.96.0.11, selector: {app: ratings}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: apps, labels: {istio.io/use-waypoint: waypoint}}
spec: {hosts: [pay.example.com, refunds.example.com], addresses: [240.0.0.1], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: 10.0.9.9}]}
"#;

fn model_and_refused(extra: &str) -> (Model, usize) {
    let (objects, bad) = parse_documents(&format!("{BASE}\n---\n{extra}"), "test");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".into())));
    (Model::compute(&state, &MeshConfig::default()), bad.len())
}

fn model(extra: &str) -> Model {
    let (m, bad) = model_and_refused(extra);
    assert_eq!(bad, 0);
    m
}

fn ap(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

fn l7<'a>(m: &'a Model, name: &str) -> &'a proto::Authorization {
    m.l7_policies
        .iter()
        .find(|p| format!("{}/{}", p.namespace, p.name) == name)
        .unwrap_or_else(|| panic!("no policy {name}: {:?}", m.l7_policies))
}

fn warnings(m: &Model, name: &str) -> Vec<String> {
    m.warnings
        .iter()
        .filter(|w| w.object.name == name && w.object.kind == "AuthorizationPolicy")
        .map(|w| w.message.clone())
        .collect()
}

fn sent_to(m: &Model, waypoint: &str, policy: &str) -> bool {
    m.waypoint_scopes
        .get(waypoint)
        .is_some_and(|names| names.contains(&format!("{SCOPE_PREFIX}{policy}")))
}

#[test]
fn a_gateway_target_reaches_every_request_through_that_waypoint() {
    let m = model(&ap(
        "apps",
        "readers",
        "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], rules: [{from: [{source: {serviceAccounts: [sleep, other/curl], principals: [cluster.local/ns/apps/sa/web]}}], to: [{operation: {methods: [GET], paths: ['/api/{*}/items'], ports: ['8080']}}], when: [{key: 'request.headers[x-team]', values: [blue]}]}]}",
    ));
    let p = l7(&m, "apps/readers");
    assert_eq!(p.action, proto::AuthorizationAction::Allow as i32);
    assert_eq!(p.waypoints, ["apps/waypoint"]);
    assert!(p.services.is_empty());
    let source = &p.rules[0].from[0];
    assert_eq!(
        source.principals,
        ["cluster.local/ns/apps/sa/web", "*/ns/apps/sa/sleep", "*/ns/other/sa/curl"]
    );
    assert_eq!(p.rules[0].to[0].ports, [8080]);
    assert_eq!(p.rules[0].when[0].key, "request.headers[x-team]");
    assert!(warnings(&m, "readers").is_empty(), "{:?}", warnings(&m, "readers"));
    assert!(sent_to(&m, "apps/waypoint", "apps/readers"));
    assert!(!sent_to(&m, "apps/second", "apps/readers"));
    assert!(m.policies.iter().all(|p| p.name != "readers"), "no node proxy gets it");
}

#[test]
fn service_and_service_entry_targets_reach_their_waypoints() {
    let m = model(&format!(
        "{}---\n{}---\n{}",
        ap(
            "apps",
            "reviews",
            "{targetRefs: [{kind: Service, group: '', name: reviews}], action: DENY, rules: [{to: [{operation: {paths: [/admin*]}}]}]}"
        ),
        ap(
            "apps",
            "pay",
            "{targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: payments}], rules: [{from: [{source: {namespaces: [apps]}}]}]}"
        ),
        ap(
            "apps",
            "ratings",
            "{targetRef: {kind: Service, name: ratings}, action: DENY, rules: [{}]}"
        ),
    ));
    let reviews = l7(&m, "apps/reviews");
    assert_eq!(reviews.services, ["apps/reviews.apps.svc.cluster.local"]);
    assert!(sent_to(&m, "apps/second", "apps/reviews"), "sent to the service's waypoint");
    assert!(!sent_to(&m, "apps/waypoint", "apps/reviews"));
    let pay = l7(&m, "apps/pay");
    assert_eq!(pay.services, ["apps/pay.example.com", "apps/refunds.example.com"]);
    assert!(sent_to(&m, "apps/waypoint", "apps/pay"));
    let ratings = warnings(&m, "ratings").join("; ");
    assert!(ratings.contains("not bound to a waypoint"), "{ratings}");
    assert!(ratings.contains("no waypoint enforces this policy"), "{ratings}");
}

#[test]
fn targets_istio_does_not_allow_are_ignored_and_said_so() {
    let m = model(&format!(
        "{}---\n{}---\n{}---\n{}",
        ap(
            "apps",
            "elsewhere",
            "{targetRefs: [{kind: Gateway, name: waypoint, namespace: shop}, {kind: Gateway, name: ingress}, {kind: Deployment, group: apps, name: x}], rules: [{}]}"
        ),
        ap(
            "apps",
            "class",
            "{targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}], action: DENY, rules: [{}]}"
        ),
        ap(
            "istio-system",
            "mesh",
            "{targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}], action: DENY, rules: [{to: [{operation: {ports: ['22']}}]}]}"
        ),
        ap("apps", "later", "{targetRefs: [{kind: Gateway, name: third}], rules: [{}]}"),
    ));
    let elsewhere = warnings(&m, "elsewhere").join("; ");
    assert!(elsewhere.contains("its own namespace"), "{elsewhere}");
    assert!(elsewhere.contains("not a waypoint"), "{elsewhere}");
    assert!(elsewhere.contains("Deployment (apps) is not a target"), "{elsewhere}");
    assert!(l7(&m, "apps/elsewhere").waypoints.is_empty());
    assert!(warnings(&m, "class").join(";").contains("only the root namespace"));
    assert!(l7(&m, "apps/class").waypoints.is_empty());
    assert_eq!(
        l7(&m, "istio-system/mesh").waypoints,
        ["apps/second", "apps/waypoint", "shop/waypoint"],
        "the root namespace's GatewayClass target: every waypoint"
    );
    assert!(sent_to(&m, "shop/waypoint", "istio-system/mesh"));
    assert_eq!(l7(&m, "apps/later").waypoints, ["apps/third"], "applies once it exists");
    assert!(warnings(&m, "later").join(";").contains("does not exist yet"));
}

#[test]
fn what_does_not_read_fails_closed() {
    let target = "targetRefs: [{kind: Gateway, name: waypoint}]";
    let m = model(&format!(
        "{}---\n{}---\n{}---\n{}",
        ap(
            "apps",
            "allow-bad-block",
            &format!(
                "{{{target}, rules: [{{from: [{{source: {{ipBlocks: [10.0.0.0/8, 10.0.0.0/99]}}}}]}}, {{from: [{{source: {{namespaces: [apps]}}}}]}}]}}"
            )
        ),
        ap(
            "apps",
            "deny-bad-block",
            &format!(
                "{{{target}, action: DENY, rules: [{{from: [{{source: {{ipBlocks: [10.0.0.0/8, nope], namespaces: [apps]}}}}], when: [{{key: 'request.hedaers[x]', values: ['1']}}, {{key: source.ip, values: [10.1.0.0/16]}}]}}]}}"
            )
        ),
        ap(
            "apps",
            "allow-bad-path",
            &format!("{{{target}, rules: [{{to: [{{operation: {{paths: ['/a/{{**}}/b']}}}}]}}]}}")
        ),
        ap("apps", "allow-empty", &format!("{{{target}, rules: [{{from: [{{source: {{}}}}]}}]}}")),
    ));
    let allow = l7(&m, "apps/allow-bad-block");
    assert_eq!(allow.rules.len(), 1, "the rule with a bad block is dropped: it allows less");
    assert_eq!(allow.rules[0].from[0].namespaces, ["apps"]);
    assert!(warnings(&m, "allow-bad-block").join(";").contains("rule dropped"));
    let deny = l7(&m, "apps/deny-bad-block");
    let rule = &deny.rules[0];
    assert!(rule.from[0].ip_blocks.is_empty(), "the whole field goes: it denies more");
    assert_eq!(rule.from[0].namespaces, ["apps"], "the rest of the source stays");
    assert_eq!(rule.when.len(), 1, "the unknown key goes, the good condition stays");
    assert_eq!(rule.when[0].key, "source.ip");
    let notes = warnings(&m, "deny-bad-block").join(";");
    assert!(notes.contains("\"nope\"") && notes.contains("request.hedaers"), "{notes}");
    assert!(l7(&m, "apps/allow-bad-path").rules.is_empty());
    assert!(l7(&m, "apps/allow-empty").rules.is_empty(), "an empty source never allows everyone");
}

#[test]
fn a_refused_targeted_policy_denies_everything_through_its_targets() {
    // `principal` is a typo: the policy is refused, and its stand-in denies
    // all requests through the waypoint it targets.
    let (m, bad) = model_and_refused(&ap(
        "apps",
        "typo",
        "{targetRefs: [{kind: Gateway, name: waypoint}], rules: [{from: [{source: {principal: [x]}}]}]}",
    ));
    assert_eq!(bad, 1);
    let p = l7(&m, "apps/typo");
    assert_eq!(p.action, proto::AuthorizationAction::Deny as i32);
    assert_eq!(p.waypoints, ["apps/waypoint"]);
    assert_eq!(p.rules, [proto::AuthorizationRule::default()], "one empty rule: everything");
    // Targets that cannot be read: every waypoint of the namespace.
    let (m, bad) =
        model_and_refused(&ap("apps", "garbled", "{targetRefs: [{kind: 7}], action: ALLOWW}"));
    assert_eq!(bad, 1);
    assert_eq!(l7(&m, "apps/garbled").waypoints, ["apps/second", "apps/waypoint"]);
    assert!(warnings(&m, "garbled").join(";").contains("cannot be read"));
}

#[test]
fn dry_run_is_carried_to_the_waypoint() {
    let m = model(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dry, namespace: apps, annotations: {istio.io/dry-run: 'true'}}\nspec: {targetRefs: [{kind: Gateway, name: waypoint}], action: DENY, rules: [{}]}\n",
    );
    assert!(l7(&m, "apps/dry").dry_run);
}
