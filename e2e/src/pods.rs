//! Cluster YAML for pods outside the mesh.

/// A namespace not in the mesh, holding `client` on node-a and `server` on
/// node-b (an echo on 8080, a sink on 9000): documents to append to a
/// cluster's YAML.
pub fn plain_pair(namespace: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {namespace}}}
spec: {{nodeName: node-a, containers: [{{name: c, image: none}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {namespace}}}
spec:
  nodeName: node-b
  containers:
  - {{name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}}
  - {{name: sink, image: none, command: [mesh-sample, sink, --port, "9000"]}}
"#
    )
}
