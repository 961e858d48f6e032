//! Which pods on this node the agent captures: pure, from the cluster
//! state the control plane's sources produce.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use mesh_config::enrollment::{Mode, mode};
use mesh_config::state::ClusterState;

/// Pod annotation naming the pod's network namespace file (set by the
/// local mesh, which creates the namespaces; in Kubernetes the CNI plugin
/// reports it instead).
pub const NETNS_ANNOTATION: &str = "mesh.dev/netns";

/// A pod to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPod {
    /// Its Kubernetes UID, which ZDS carries; `<cluster id>//Pod/<ns>/<name>`
    /// when the object has none.
    pub uid: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its network namespace file, when the pod says.
    pub netns: Option<PathBuf>,
}

/// The pods on `node` that are enrolled in ambient mode and running with an
/// address, by uid (see [`CapturedPod::uid`]).
pub fn captured(
    state: &ClusterState,
    node: &str,
    cluster_id: &str,
) -> BTreeMap<String, CapturedPod> {
    let mut out = BTreeMap::new();
    for ((namespace, name), pod) in &state.pods {
        let Some(spec) = &pod.spec else { continue };
        if spec.node_name.as_deref() != Some(node) || spec.host_network == Some(true) {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let ips: Vec<IpAddr> = match &status.pod_ips {
            Some(ips) if !ips.is_empty() => {
                ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect()
            }
            _ => status.pod_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
        };
        if ips.is_empty() {
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        if mode(&state.namespace_labels(namespace), &labels, &annotations) != Mode::Ambient {
            continue;
        }
        // ZDS names a pod by its Kubernetes UID, as Istio's CNI does (Istio's
        // ztunnel keys pods by it); a pod without one (hand-written YAML in
        // the local mesh) by its workload uid.
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("{cluster_id}//Pod/{namespace}/{name}"));
        out.insert(
            uid.clone(),
            CapturedPod {
                uid,
                name: name.clone(),
                namespace: namespace.clone(),
                service_account: spec
                    .service_account_name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                ips,
                netns: annotations.get(NETNS_ANNOTATION).map(PathBuf::from),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use mesh_config::objects::parse_documents;

    use super::*;

    fn state(yaml: &str) -> ClusterState {
        let (objects, bad) = parse_documents(yaml, "test");
        assert!(bad.is_empty(), "{bad:?}");
        ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".to_string()))).0
    }

    const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps, uid: 0b9c6a5e-2f1d-4c3b-9e8f-7a6b5c4d3e2f, annotations: {mesh.dev/netns: /var/run/netns/web}}
spec: {nodeName: node-a, serviceAccountName: web, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: other-node, namespace: apps}
spec: {nodeName: node-b, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.2.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: apps}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: apps}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Succeeded, podIP: 10.1.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: apps, labels: {istio.io/dataplane-mode: none}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.1.0.6}
"#;

    #[test]
    fn only_enrolled_running_pods_on_this_node() {
        let unlabeled =
            state(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: apps}}\n---{PODS}"));
        assert!(captured(&unlabeled, "node-a", "Kubernetes").is_empty(), "namespace not enrolled");

        let ambient = state(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: apps, labels: {{istio.io/dataplane-mode: ambient}}}}\n---{PODS}"
        ));
        let pods = captured(&ambient, "node-a", "Kubernetes");
        let uid = "0b9c6a5e-2f1d-4c3b-9e8f-7a6b5c4d3e2f";
        assert_eq!(pods.keys().collect::<Vec<_>>(), [uid], "by Kubernetes UID");
        let web = &pods[uid];
        assert_eq!(web.service_account, "web");
        assert_eq!(web.ips, ["10.1.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(web.netns.as_deref(), Some(std::path::Path::new("/var/run/netns/web")));

        let sidecar = state(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: apps, labels: {{istio.io/dataplane-mode: ambient, istio-injection: enabled}}}}\n---{PODS}"
        ));
        assert!(captured(&sidecar, "node-a", "Kubernetes").is_empty(), "sidecar wins");
    }
}
