//! Reading a directory of Kubernetes YAML into what the local cluster
//! builds: nodes, pods (Deployments expanded), and everything else passed
//! to the control plane unchanged.

use std::path::Path;

use serde_json::{Value, json};

/// A pod to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The node it runs on (`spec.nodeName`, else spread round robin).
    pub node: Option<String>,
    /// The Pod object as written to the control plane (status added later).
    pub object: Value,
    /// The commands of its containers (`command` + `args`).
    pub commands: Vec<Vec<String>>,
    /// For a waypoint's pod: the Gateway it serves (the cluster starts the
    /// `waypoint` binary for it, as istiod's deployment controller would).
    pub waypoint: Option<String>,
}

/// What a directory describes.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    /// Node names, in order (two by default: `node-a`, `node-b`).
    pub nodes: Vec<String>,
    /// Pods.
    pub pods: Vec<PodSpec>,
    /// Every other object, for the control plane.
    pub objects: Vec<Value>,
}

/// Why a directory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A document is not YAML.
    #[error("{path} (document {document}): {message}")]
    Yaml {
        /// The file.
        path: String,
        /// 1-based.
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// An object misses something required.
    #[error("{kind} {name}: {message}")]
    Invalid {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl ClusterSpec {
    /// Reads every `*.yaml`/`*.yml`/`*.json` file of `dir`, in name order
    /// (or one file).
    pub fn read(path: &Path) -> Result<Self, SpecError> {
        let files = if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|source| SpecError::Read { path: path.display().to_string(), source })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut documents = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| SpecError::Read { path: file.display().to_string(), source })?;
            documents.extend(parse(&text, &file.display().to_string())?);
        }
        Self::from_documents(documents)
    }

    /// Builds from parsed documents.
    pub fn from_documents(documents: Vec<Value>) -> Result<Self, SpecError> {
        let mut spec = ClusterSpec::default();
        for doc in documents {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Node" => spec.nodes.push(name_of(&doc, &kind)?),
                "Pod" => spec.pods.push(pod_from(doc.clone(), &kind)?),
                "Deployment" => spec.pods.extend(expand_deployment(&doc)?),
                "Gateway" if doc["spec"]["gatewayClassName"] == "istio-waypoint" => {
                    let (pod, service) = waypoint_for(&doc)?;
                    spec.pods.push(pod);
                    spec.objects.push(service);
                    spec.objects.push(doc);
                }
                _ => spec.objects.push(doc),
            }
        }
        if spec.nodes.is_empty() {
            spec.nodes = vec!["node-a".into(), "node-b".into()];
        }
        Ok(spec)
    }
}

/// Parses a multi-document YAML text.
pub fn parse(text: &str, source: &str) -> Result<Vec<Value>, SpecError> {
    let mut out = Vec::new();
    for (index, doc) in split(text).into_iter().enumerate() {
        let value: Value = serde_saphyr::from_str(doc).map_err(|e| SpecError::Yaml {
            path: source.to_string(),
            document: index + 1,
            message: e.to_string(),
        })?;
        match value {
            Value::Null => {}
            Value::Object(_) if value["kind"] == "List" => {
                out.extend(value["items"].as_array().cloned().unwrap_or_default())
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn split(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn name_of(doc: &Value, kind: &str) -> Result<String, SpecError> {
    doc["metadata"]["name"].as_str().map(str::to_string).ok_or_else(|| SpecError::Invalid {
        kind: kind.into(),
        name: "?".into(),
        message: "metadata.name is required".into(),
    })
}

fn pod_from(mut doc: Value, kind: &str) -> Result<PodSpec, SpecError> {
    let name = name_of(&doc, kind)?;
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    doc["metadata"]["namespace"] = json!(namespace);
    let node = doc["spec"]["nodeName"].as_str().map(str::to_string);
    let commands = doc["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let strings = |v: &Value| {
                        v.as_array()
                            .map(|a| {
                                a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
                            })
                            .unwrap_or_default()
                    };
                    let mut cmd: Vec<String> = strings(&c["command"]);
                    cmd.extend(strings(&c["args"]));
                    cmd
                })
                .filter(|cmd: &Vec<String>| !cmd.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(PodSpec { name, namespace, node, object: doc, commands, waypoint: None })
}

/// What istiod deploys for an `istio-waypoint` Gateway: one pod running
/// the waypoint under a service account named after the Gateway, and a
/// Service of the Gateway's name in front of it (what bindings resolve).
/// Neither is captured or bound to a waypoint itself.
pub(crate) fn waypoint_for(gateway: &Value) -> Result<(PodSpec, Value), SpecError> {
    let name = name_of(gateway, "Gateway")?;
    let namespace = gateway["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    let labels = json!({
        "gateway.networking.k8s.io/gateway-name": name,
        "istio.io/dataplane-mode": "none",
        "istio.io/use-waypoint": "none",
    });
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{name}-0"), "namespace": namespace, "labels": labels},
        "spec": {"serviceAccountName": name, "containers": [{"name": "waypoint", "image": "waypoint"}]},
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"istio.io/use-waypoint": "none"}},
        "spec": {
            "selector": {"gateway.networking.k8s.io/gateway-name": name},
            "ports": [{"name": "mesh", "port": 15008, "protocol": "TCP"}],
        },
    });
    let mut pod = pod_from(pod, "Pod")?;
    pod.waypoint = Some(name);
    Ok((pod, service))
}

fn expand_deployment(doc: &Value) -> Result<Vec<PodSpec>, SpecError> {
    let name = name_of(doc, "Deployment")?;
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
    let template = &doc["spec"]["template"];
    if !template.is_object() {
        return Err(SpecError::Invalid {
            kind: "Deployment".into(),
            name,
            message: "spec.template is required".into(),
        });
    }
    (0..replicas)
        .map(|i| {
            let mut metadata = template["metadata"].clone();
            if !metadata.is_object() {
                metadata = json!({});
            }
            metadata["name"] = json!(format!("{name}-{i}"));
            metadata["namespace"] = json!(namespace);
            metadata["ownerReferences"] =
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-local"), "uid": format!("{name}-local")}]);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"].clone()});
            pod_from(pod, "Pod")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deployments_expand_and_defaults_apply() {
        let docs = parse(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: x, command: [mesh-sample, http], args: ["--port", "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: sleep}
spec: {nodeName: node-b, containers: [{name: s, image: x}]}
"#,
            "test",
        )
        .unwrap();
        let spec = ClusterSpec::from_documents(docs).unwrap();
        assert_eq!(spec.nodes, ["node-a", "node-b"]);
        let names: Vec<_> =
            spec.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        assert_eq!(names, ["apps/web-0", "apps/web-1", "default/sleep"]);
        assert_eq!(spec.pods[0].commands, [["mesh-sample", "http", "--port", "8080"]]);
        assert_eq!(spec.pods[1].object["metadata"]["labels"]["app"], "web");
        assert_eq!(spec.pods[2].node.as_deref(), Some("node-b"));
        assert_eq!(spec.objects.len(), 1);
    }

    #[test]
    fn bad_yaml_is_named() {
        let err = parse("a: [unclosed\n", "file.yaml").unwrap_err();
        assert!(err.to_string().starts_with("file.yaml (document 1)"), "{err}");
    }
}
