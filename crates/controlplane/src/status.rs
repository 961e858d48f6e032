//! Kubernetes mode: what the control plane made of each routing object,
//! written to its `status`, as Gateway API and Istio controllers do.
//!
//! - HTTPRoute: `status.parents[]`, one per parentRef, with `Accepted`
//!   (False when the parent is not a waypoint or service the mesh serves)
//!   and `ResolvedRefs` (False, `BackendNotFound`, when a backend does not
//!   exist), controller `istio.io/gateway-controller`, as istiod writes it.
//! - VirtualService and DestinationRule: `status.conditions` (`Reconciled`)
//!   and `status.validationMessages` (one per field or part not applied),
//!   as istiod's analysis writes them.
//! - AuthorizationPolicy: `status.conditions`, `ZtunnelAccepted` (selector,
//!   namespace and mesh-wide policies) or `WaypointAccepted` (`targetRefs`),
//!   as istiod writes them: True when a proxy enforces it (reason
//!   `UnsupportedValue` when the translation changed what it says, the
//!   message saying what), False when nobody does.
//!
//! The pure part ([`statuses`]) is tested without an API server; the
//! writer patches only what changed since its last write.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::ClusterState;
use crate::model::Warning;
use crate::model::policies::Enforcement;

/// The controller name on HTTPRoute parent statuses (Istio's).
pub const CONTROLLER: &str = "istio.io/gateway-controller";

/// Which object a status belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusKey {
    /// API group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str, generation: Option<i64>) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
    });
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

/// The status every routing and policy object should have now.
pub fn statuses(
    state: &ClusterState,
    warnings: &[Warning],
    enforcement: &BTreeMap<String, Enforcement>,
) -> BTreeMap<StatusKey, Value> {
    let notes = |kind: &str, namespace: &str, name: &str| -> Vec<&str> {
        warnings
            .iter()
            .filter(|w| {
                w.object.kind == kind
                    && w.object.namespace.as_deref() == Some(namespace)
                    && w.object.name == name
            })
            .map(|w| w.message.as_str())
            .collect()
    };
    let mut out = BTreeMap::new();
    for ((namespace, name), route) in &state.http_routes {
        let notes = notes("HTTPRoute", namespace, name);
        let backend_problems: Vec<&str> = notes
            .iter()
            .copied()
            .filter(|n| n.contains("does not exist") && !n.starts_with("parentRefs"))
            .collect();
        let parents: Vec<Value> = route
            .spec
            .parent_refs
            .iter()
            .enumerate()
            .map(|(i, parent)| {
                let prefix = format!("parentRefs[{i}]");
                let refused: Vec<&str> = notes.iter().copied().filter(|n| n.starts_with(&prefix)).collect();
                let mut parent_ref = json!({"name": parent.name});
                if let Some(g) = &parent.group {
                    parent_ref["group"] = json!(g);
                }
                if let Some(k) = &parent.kind {
                    parent_ref["kind"] = json!(k);
                }
                if let Some(ns) = &parent.namespace {
                    parent_ref["namespace"] = json!(ns);
                }
                if let Some(p) = parent.port {
                    parent_ref["port"] = json!(p);
                }
                let accepted = if refused.is_empty() {
                    condition("Accepted", true, "Accepted", "Route was valid", None)
                } else {
                    condition("Accepted", false, "NoMatchingParent", &refused.join("; "), None)
                };
                let resolved = if backend_problems.is_empty() {
                    condition("ResolvedRefs", true, "ResolvedRefs", "All references resolved", None)
                } else {
                    condition("ResolvedRefs", false, "BackendNotFound", &backend_problems.join("; "), None)
                };
                json!({"parentRef": parent_ref, "controllerName": CONTROLLER, "conditions": [accepted, resolved]})
            })
            .collect();
        out.insert(
            StatusKey {
                group: "gateway.networking.k8s.io",
                version: "v1",
                kind: "HTTPRoute",
                plural: "httproutes",
                namespace: namespace.clone(),
                name: name.clone(),
            },
            json!({"parents": parents}),
        );
    }
    let istio = |kind: &'static str, plural: &'static str, namespace: &String, name: &String| {
        let notes = notes(kind, namespace, name);
        let messages: Vec<Value> = notes
            .iter()
            .map(|n| json!({"type": {"code": "MESH0001", "name": "ConfigNotApplied"}, "level": "WARNING", "message": n}))
            .collect();
        let reconciled = condition(
            "Reconciled",
            true,
            "Reconciled",
            "sent to the waypoints that front its hosts",
            None,
        );
        (
            StatusKey {
                group: "networking.istio.io",
                version: "v1",
                kind,
                plural,
                namespace: namespace.clone(),
                name: name.clone(),
            },
            json!({"conditions": [reconciled], "validationMessages": messages}),
        )
    };
    for (namespace, name) in state.virtual_services.keys() {
        let (k, v) = istio("VirtualService", "virtualservices", namespace, name);
        out.insert(k, v);
    }
    for (namespace, name) in state.destination_rules.keys() {
        let (k, v) = istio("DestinationRule", "destinationrules", namespace, name);
        out.insert(k, v);
    }
    for (key, e) in enforcement {
        let Some((namespace, name)) = key.split_once('/') else { continue };
        let kind = if e.layer == "waypoint" { "WaypointAccepted" } else { "ZtunnelAccepted" };
        let by = if e.layer == "waypoint" {
            format!("bound to {}", e.by.join(", "))
        } else {
            "attached to ztunnel".to_string()
        };
        let notes = e.notes.join("; ");
        let condition = match (e.by.is_empty(), notes.is_empty()) {
            (false, true) => condition(kind, true, "Accepted", &by, None),
            (false, false) => {
                condition(kind, true, "UnsupportedValue", &format!("{by}; {notes}"), None)
            }
            (true, _) => condition(kind, false, "TargetNotFound", &notes, None),
        };
        out.insert(
            StatusKey {
                group: "security.istio.io",
                version: "v1",
                kind: "AuthorizationPolicy",
                plural: "authorizationpolicies",
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            json!({"conditions": [condition]}),
        );
    }
    out
}

/// Writes statuses through the Kubernetes API, each only when it changed.
pub struct StatusWriter {
    client: kube::Client,
    written: BTreeMap<StatusKey, Value>,
}

impl StatusWriter {
    /// A writer over `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client, written: BTreeMap::new() }
    }

    /// Patches the objects whose status differs from what was last written;
    /// forgets the objects that are gone.
    pub async fn write(&mut self, wanted: BTreeMap<StatusKey, Value>) {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
        self.written.retain(|k, _| wanted.contains_key(k));
        for (key, status) in wanted {
            if self.written.get(&key) == Some(&status) {
                continue;
            }
            let gvk = GroupVersionKind::gvk(key.group, key.version, key.kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, key.plural);
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.namespace, &resource);
            let patch = Patch::Merge(json!({"status": status}));
            match api.patch_status(&key.name, &PatchParams::default(), &patch).await {
                Ok(_) => {
                    self.written.insert(key, status);
                }
                Err(e) => {
                    tracing::warn!(kind = key.kind, namespace = %key.namespace, name = %key.name,
                    error = %e, "cannot write the object's status")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::parse_documents;
    use crate::model::{MeshConfig, Model};

    #[test]
    fn routes_say_what_was_refused() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: web}, {group: "", kind: Service, name: nowhere}]
  rules: [{backendRefs: [{name: ghost, port: 80}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: apps}
spec: {hosts: [web], http: [{route: [{destination: {host: web}}], corsPolicy: {}}]}
"#;
        let (objects, _) = parse_documents(yaml, "t");
        let (state, _) =
            ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
        let model = Model::compute(&state, &MeshConfig::default());
        let all = statuses(&state, &model.warnings, &model.enforcement);
        let route = all.iter().find(|(k, _)| k.kind == "HTTPRoute").unwrap().1;
        let parents = route["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["conditions"][0]["status"], "True");
        assert_eq!(parents[1]["conditions"][0]["status"], "False");
        assert_eq!(parents[1]["conditions"][0]["reason"], "NoMatchingParent");
        assert_eq!(parents[0]["conditions"][1]["reason"], "BackendNotFound");
        assert!(parents[0]["conditions"][1]["message"].as_str().unwrap().contains("ghost"));
        let vs = all.iter().find(|(k, _)| k.kind == "VirtualService").unwrap().1;
        let messages = vs["validationMessages"].as_array().unwrap();
        assert!(
            messages.iter().any(|m| m["message"].as_str().unwrap().contains("corsPolicy")),
            "{vs}"
        );
    }

    #[test]
    fn policies_say_who_enforces_them() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps, labels: {app: web}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.9}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: apps}
spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [apps]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7-only-deny, namespace: apps}
spec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-waypoint, namespace: apps}
spec: {targetRefs: [{kind: Gateway, name: waypoint}], rules: [{to: [{operation: {methods: [GET]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: on-service, namespace: apps}
spec: {targetRefs: [{kind: Service, name: web}], rules: [{to: [{operation: {methods: [GET]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: apps}
spec: {selector: {matchLabels: {app: ghost}}, rules: [{}]}
"#;
        let (objects, bad) = parse_documents(yaml, "t");
        assert!(bad.is_empty(), "{bad:?}");
        let (state, _) =
            ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
        let model = Model::compute(&state, &MeshConfig::default());
        let all = statuses(&state, &model.warnings, &model.enforcement);
        let of = |name: &str| {
            let (_, status) = all
                .iter()
                .find(|(k, _)| k.kind == "AuthorizationPolicy" && k.name == name)
                .unwrap_or_else(|| panic!("no status for {name}"));
            let c = &status["conditions"][0];
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
                c["message"].as_str().unwrap().to_string(),
            )
        };
        let (kind, ok, reason, _) = of("l4");
        assert_eq!(
            (kind.as_str(), ok.as_str(), reason.as_str()),
            ("ZtunnelAccepted", "True", "Accepted")
        );
        // A DENY of only L7 attributes on a selector: ztunnel denies all it
        // selects, and says so.
        let (kind, ok, reason, message) = of("l7-only-deny");
        assert_eq!(
            (kind.as_str(), ok.as_str(), reason.as_str()),
            ("ZtunnelAccepted", "True", "UnsupportedValue")
        );
        assert!(message.contains("denies more"), "{message}");
        let (kind, ok, _, message) = of("on-waypoint");
        assert_eq!((kind.as_str(), ok.as_str()), ("WaypointAccepted", "True"));
        assert_eq!(message, "bound to apps/waypoint");
        // The service has no waypoint: nobody enforces it.
        let (kind, ok, reason, message) = of("on-service");
        assert_eq!(
            (kind.as_str(), ok.as_str(), reason.as_str()),
            ("WaypointAccepted", "False", "TargetNotFound")
        );
        assert!(message.contains("no waypoint enforces"), "{message}");
        let (_, ok, _, message) = of("nothing");
        assert_eq!(ok, "False");
        assert!(message.contains("matches no running pod"), "{message}");
    }
}
