//! Publishing the model to the xDS snapshot store.
//!
//! The store keeps versions by content, so proxies are sent only what
//! changed (one pod's change reaches proxies as one workload). Given the
//! model published last, resources equal to their previous value are not
//! even re-encoded.

use std::collections::{HashMap, HashSet};

use mesh_core::policy::Authorization;
use mesh_core::{Service, Workload};
use mesh_proto::type_url;
use prost_types::Any;
use tracing::warn;
use xds::{Change, SnapshotStore};

use crate::model::Model;

/// What was published before, by resource name.
#[derive(Default)]
struct Before<'a> {
    workloads: HashMap<&'a str, &'a Workload>,
    services: HashMap<String, &'a Service>,
    policies: HashMap<String, &'a Authorization>,
    routes: HashMap<&'a str, &'a mesh_proto::l7::ServiceRoutes>,
    l7_policies: HashMap<String, &'a mesh_proto::l7::Authorization>,
    l7_authentications: HashMap<String, &'a mesh_proto::l7::Authentication>,
}

/// Every type the model publishes.
pub const TYPES: [&str; 5] = [
    type_url::ADDRESS,
    type_url::AUTHORIZATION,
    type_url::SERVICE_ROUTES,
    type_url::L7_AUTHORIZATION,
    type_url::L7_AUTHENTICATION,
];

/// The resource name of an L7 policy or RequestAuthentication:
/// `namespace/name`.
fn l7_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Brings `store` to exactly the model's resources. `previous` is the model
/// the store was last brought to, if any.
pub fn publish(store: &SnapshotStore, model: &Model, previous: Option<&Model>) {
    let before = previous
        .map(|p| Before {
            workloads: p.workloads.iter().map(|w| (w.uid.as_str(), w)).collect(),
            services: p.services.iter().map(|s| (s.key().to_string(), s)).collect(),
            policies: p.policies.iter().map(|a| (a.key(), a)).collect(),
            routes: p.routes.by_service.iter().map(|(k, r)| (k.as_str(), r)).collect(),
            l7_policies: p
                .l7_policies
                .iter()
                .map(|a| (l7_name(&a.namespace, &a.name), a))
                .collect(),
            l7_authentications: p
                .l7_authentications
                .iter()
                .map(|a| (l7_name(&a.namespace, &a.name), a))
                .collect(),
        })
        .unwrap_or_default();
    let unchanged =
        |type_url: &str, name: &str, same: bool| same && store.version(type_url, name).is_some();
    let mut changes = Vec::new();
    let mut keep: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut put =
        |type_url: &'static str, name: String, body: Result<Any, prost::EncodeError>| match body {
            Ok(body) => {
                keep.entry(type_url).or_default().insert(name.clone());
                changes.push(Change::Put { type_url: type_url.into(), name, body });
            }
            Err(e) => warn!(%name, error = %e, "cannot encode resource"),
        };
    let mut untouched = Vec::new();
    for w in &model.workloads {
        if unchanged(type_url::ADDRESS, &w.uid, before.workloads.get(w.uid.as_str()) == Some(&w)) {
            untouched.push((type_url::ADDRESS, w.uid.clone()));
            continue;
        }
        let address = mesh_core::Address::Workload(Box::new(w.clone()));
        put(
            type_url::ADDRESS,
            w.uid.clone(),
            Any::from_msg(&mesh_proto::workload::Address::from(&address)),
        );
    }
    for s in &model.services {
        let name = s.key().to_string();
        if unchanged(type_url::ADDRESS, &name, before.services.get(&name) == Some(&s)) {
            untouched.push((type_url::ADDRESS, name));
            continue;
        }
        let address = mesh_core::Address::Service(Box::new(s.clone()));
        put(type_url::ADDRESS, name, Any::from_msg(&mesh_proto::workload::Address::from(&address)));
    }
    for p in &model.policies {
        let name = p.key();
        if unchanged(type_url::AUTHORIZATION, &name, before.policies.get(&name) == Some(&p)) {
            untouched.push((type_url::AUTHORIZATION, name));
            continue;
        }
        put(
            type_url::AUTHORIZATION,
            name,
            Any::from_msg(&mesh_proto::security::Authorization::from(p)),
        );
    }
    for (name, routes) in &model.routes.by_service {
        if unchanged(
            type_url::SERVICE_ROUTES,
            name,
            before.routes.get(name.as_str()) == Some(&routes),
        ) {
            untouched.push((type_url::SERVICE_ROUTES, name.clone()));
            continue;
        }
        put(type_url::SERVICE_ROUTES, name.clone(), Any::from_msg(routes));
    }
    for p in &model.l7_policies {
        let name = l7_name(&p.namespace, &p.name);
        let same = before.l7_policies.get(&name) == Some(&p);
        if unchanged(type_url::L7_AUTHORIZATION, &name, same) {
            untouched.push((type_url::L7_AUTHORIZATION, name));
            continue;
        }
        put(type_url::L7_AUTHORIZATION, name, Any::from_msg(p));
    }
    for a in &model.l7_authentications {
        let name = l7_name(&a.namespace, &a.name);
        let same = before.l7_authentications.get(&name) == Some(&a);
        if unchanged(type_url::L7_AUTHENTICATION, &name, same) {
            untouched.push((type_url::L7_AUTHENTICATION, name));
            continue;
        }
        put(type_url::L7_AUTHENTICATION, name, Any::from_msg(a));
    }
    for (type_url, name) in untouched {
        keep.entry(type_url).or_default().insert(name);
    }
    for type_url in TYPES {
        let wanted = keep.get(type_url);
        for name in store.names(type_url) {
            if !wanted.is_some_and(|k| k.contains(&name)) {
                changes.push(Change::Remove { type_url: type_url.into(), name });
            }
        }
    }
    store.apply(changes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterState, parse_documents};
    use crate::model::MeshConfig;

    const YAML: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: apps, labels: {app: a}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: apps, labels: {app: b}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: apps}
spec: {clusterIP: 10.96.0.1, selector: {app: a}, ports: [{port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: apps}
spec: {rules: [{}]}
";

    fn contents(store: &SnapshotStore) -> Vec<(String, String, Option<String>)> {
        let mut out: Vec<_> = [type_url::ADDRESS, type_url::AUTHORIZATION]
            .into_iter()
            .flat_map(|t| store.names(t).into_iter().map(move |n| (t.to_string(), n)))
            .map(|(t, n)| {
                let v = store.version(&t, &n);
                (t, n, v)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn publishing_against_the_previous_model_gives_the_same_store() {
        let mesh = MeshConfig::default();
        let (objects, _) = parse_documents(YAML, "t");
        let (before, _) =
            ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
        let first = Model::compute(&before, &mesh);
        let incremental = SnapshotStore::new();
        publish(&incremental, &first, None);
        let generation = incremental.generation();

        // b changes its IP, a goes away.
        let mut after = before.clone();
        after.pods.remove(&("apps".to_string(), "a".to_string()));
        let b = after.pods.get_mut(&("apps".to_string(), "b".to_string())).unwrap();
        b.status.as_mut().unwrap().pod_ip = Some("10.0.0.3".into());
        let second = first.update(&before, &after, &mesh);
        publish(&incremental, &second, Some(&first));

        let fresh = SnapshotStore::new();
        publish(&fresh, &second, None);
        assert_eq!(contents(&incremental), contents(&fresh));
        assert_eq!(incremental.generation(), generation + 1, "one change set");
        assert!(incremental.version(type_url::ADDRESS, "Kubernetes//Pod/apps/a").is_none());
    }
}
