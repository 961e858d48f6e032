//! Kubernetes objects as the model reads them, parsed from YAML or JSON
//! documents one at a time, so one bad object never stops the others.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::istio::{
    AuthorizationPolicySpec, GatewaySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
    ServiceEntrySpec,
};
use super::routing::{DestinationRuleSpec, HttpRouteSpec, VirtualServiceSpec};

/// A namespaced Istio resource: where it is and its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<S> {
    /// Namespace (`default` when the document names none).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// True when this is not the user's object but the fail-closed stand-in
    /// for a security object that was refused (`crate::security`).
    pub fail_closed: bool,
    /// `metadata.creationTimestamp` (RFC 3339), when the source has one:
    /// Gateway API breaks ties between routes by age.
    pub created: Option<String>,
    /// The spec.
    pub spec: S,
}

impl Named<()> {
    /// Only the name: for a stand-in whose metadata could not be read.
    pub(crate) fn bare(reference: &ObjectRef) -> Self {
        Self {
            namespace: reference.namespace.clone().unwrap_or_default(),
            name: reference.name.clone(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            fail_closed: false,
            created: None,
            spec: (),
        }
    }

    /// The same metadata with `spec`.
    pub(crate) fn with_spec<S>(self, spec: S) -> Named<S> {
        Named {
            namespace: self.namespace,
            name: self.name,
            labels: self.labels,
            annotations: self.annotations,
            fail_closed: self.fail_closed,
            created: self.created,
            spec,
        }
    }
}

/// An object the model uses.
#[derive(Debug, Clone)]
pub enum Object {
    /// `v1` Namespace.
    Namespace(Box<Namespace>),
    /// `v1` Pod.
    Pod(Box<Pod>),
    /// `v1` Service.
    Service(Box<Service>),
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// `v1` ServiceAccount.
    ServiceAccount(Box<ServiceAccount>),
    /// `v1` Node.
    Node(Box<Node>),
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy(Named<AuthorizationPolicySpec>),
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication(Named<PeerAuthenticationSpec>),
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication(Named<RequestAuthenticationSpec>),
    /// `gateway.networking.k8s.io` Gateway.
    Gateway(Named<GatewaySpec>),
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry(Named<ServiceEntrySpec>),
    /// `gateway.networking.k8s.io` HTTPRoute.
    HttpRoute(Box<Named<HttpRouteSpec>>),
    /// `networking.istio.io` VirtualService.
    VirtualService(Box<Named<VirtualServiceSpec>>),
    /// `networking.istio.io` DestinationRule.
    DestinationRule(Box<Named<DestinationRuleSpec>>),
}

/// Kind, namespace and name: how errors name an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// An object that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadObject {
    /// Where it came from (file and document number).
    pub source: String,
    /// The object, when its kind and name could be read.
    pub object: Option<ObjectRef>,
    /// What was wrong.
    pub reason: String,
    /// For a refused security object: what is enforced in its place.
    pub in_force: Option<InForce>,
}

/// What the mesh enforces in place of a refused security object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InForce {
    /// A fail-closed stand-in (`crate::security`): deny all, or STRICT.
    FailClosed,
    /// The last valid version read earlier (`crate::last_valid`).
    LastValid,
}

impl BadObject {
    /// A skipped object with nothing in its place.
    pub fn skipped(source: String, object: Option<ObjectRef>, reason: String) -> Self {
        Self { source, object, reason, in_force: None }
    }

    /// What is enforced in the object's place, in words (empty when nothing).
    pub fn consequence(&self) -> String {
        let kind = self.object.as_ref().map(|o| o.kind.as_str()).unwrap_or_default();
        match self.in_force {
            None => String::new(),
            Some(InForce::FailClosed) => super::security::stand_in_effect(kind).to_string(),
            Some(InForce::LastValid) => {
                "the last valid version stays in force until it is fixed".to_string()
            }
        }
    }
}

impl fmt::Display for BadObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(o) => write!(f, "{}: {o}: {}", self.source, self.reason)?,
            None => write!(f, "{}: {}", self.source, self.reason)?,
        }
        match self.in_force {
            Some(_) => write!(f, "; {}", self.consequence()),
            None => Ok(()),
        }
    }
}

impl Object {
    /// Kind, namespace and name.
    pub fn reference(&self) -> ObjectRef {
        use kube::Resource;
        let meta = |kind: &str, ns: Option<&String>, name: Option<&String>| ObjectRef {
            kind: kind.to_string(),
            namespace: ns.cloned(),
            name: name.cloned().unwrap_or_default(),
        };
        match self {
            Object::Namespace(o) => meta("Namespace", None, o.meta().name.as_ref()),
            Object::Node(o) => meta("Node", None, o.meta().name.as_ref()),
            Object::Pod(o) => meta("Pod", o.meta().namespace.as_ref(), o.meta().name.as_ref()),
            Object::Service(o) => {
                meta("Service", o.meta().namespace.as_ref(), o.meta().name.as_ref())
            }
            Object::EndpointSlice(o) => {
                meta("EndpointSlice", o.meta().namespace.as_ref(), o.meta().name.as_ref())
            }
            Object::ServiceAccount(o) => {
                meta("ServiceAccount", o.meta().namespace.as_ref(), o.meta().name.as_ref())
            }
            Object::AuthorizationPolicy(n) => {
                meta("AuthorizationPolicy", Some(&n.namespace), Some(&n.name))
            }
            Object::PeerAuthentication(n) => {
                meta("PeerAuthentication", Some(&n.namespace), Some(&n.name))
            }
            Object::RequestAuthentication(n) => {
                meta("RequestAuthentication", Some(&n.namespace), Some(&n.name))
            }
            Object::Gateway(n) => meta("Gateway", Some(&n.namespace), Some(&n.name)),
            Object::HttpRoute(n) => meta("HTTPRoute", Some(&n.namespace), Some(&n.name)),
            Object::VirtualService(n) => meta("VirtualService", Some(&n.namespace), Some(&n.name)),
            Object::DestinationRule(n) => {
                meta("DestinationRule", Some(&n.namespace), Some(&n.name))
            }
            Object::ServiceEntry(n) => meta("ServiceEntry", Some(&n.namespace), Some(&n.name)),
        }
    }
}

/// What documents held: the objects the model uses, the ones refused, and
/// how many of each kind the mesh does not handle (`apiVersion kind` →
/// count), so a user's Deployment or HTTPRoute is reported, not lost.
#[derive(Debug, Default)]
pub struct Documents {
    /// The objects read (stand-ins of refused security objects included).
    pub objects: Vec<Object>,
    /// The objects refused, and why.
    pub bad: Vec<BadObject>,
    /// Kinds the mesh ignores, with a count.
    pub ignored: BTreeMap<String, usize>,
}

impl Documents {
    /// Reads every document of a YAML (or JSON) text. `source` names the
    /// text in errors. `kind: List` documents are expanded.
    pub fn read(&mut self, text: &str, source: &str) {
        for (index, document) in split_documents(text).into_iter().enumerate() {
            // Line numbers in YAML errors count from the document's start.
            let where_ = format!("{source} (document {}, from line {})", index + 1, document.line);
            if let Some(separator) = document.bad_separator {
                let reason = format!(
                    "invalid YAML document separator `--- {separator}`: an object starts on the line after `---` (Kubernetes refuses this file)"
                );
                self.bad.push(BadObject::skipped(where_, None, reason));
                continue;
            }
            let mut value: Value = match serde_saphyr::from_str(document.text) {
                Ok(Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    self.bad.push(BadObject::skipped(where_, None, format!("not valid YAML: {e}")));
                    continue;
                }
            };
            if value.get("kind").and_then(Value::as_str) == Some("List")
                && let Some(Value::Array(items)) = value.get_mut("items").map(Value::take)
            {
                // Each item is an object of its own, refused on its own.
                for (i, item) in items.into_iter().enumerate() {
                    let item_source = format!("{source} (document {}, item {i})", index + 1);
                    self.collect(parse_object(item), &item_source);
                }
            } else {
                self.collect(parse_object(value), &where_);
            }
        }
    }

    /// Files the outcome of [`parse_object`]: the object, a kind ignored,
    /// or a [`BadObject`] (and the stand-in that fails closed in a refused
    /// object's place).
    pub(crate) fn collect(&mut self, parsed: Result<Read, Rejected>, source: &str) {
        match parsed {
            Ok(Read::Object(object)) => self.objects.push(*object),
            Ok(Read::Ignored(kind)) => *self.ignored.entry(kind).or_default() += 1,
            Err(rejected) => {
                let in_force = rejected.stand_in.is_some().then_some(InForce::FailClosed);
                self.bad.push(BadObject {
                    source: source.to_string(),
                    object: rejected.object,
                    reason: rejected.reason,
                    in_force,
                });
                self.objects.extend(rejected.stand_in.map(|o| *o));
            }
        }
    }
}

/// Parses every document of a YAML (or JSON) text: [`Documents::read`]
/// without the count of ignored kinds.
pub fn parse_documents(text: &str, source: &str) -> (Vec<Object>, Vec<BadObject>) {
    let mut documents = Documents::default();
    documents.read(text, source);
    (documents.objects, documents.bad)
}

/// One document of a multi-document text.
#[derive(Debug, PartialEq, Eq)]
struct Document<'a> {
    text: &'a str,
    /// Its first line in the file (1-based).
    line: usize,
    /// Content written on its `---` line (Kubernetes refuses that).
    bad_separator: Option<&'a str>,
}

/// Splits on `---` separator lines, as Kubernetes' YAML reader does: a
/// line that starts with `---` separates documents, and anything but a
/// comment after it is an error. (A YAML parser's multi-document mode
/// fails the whole stream on one broken document; we want the others.)
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut current = Document { text: "", line: 1, bad_separator: None };
    let (mut start, mut offset) = (0, 0);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            documents.push(Document { text: &text[start..offset], ..current });
            let bad = (!rest.is_empty() && !rest.starts_with('#')).then_some(rest);
            current = Document { text: "", line: number + 2, bad_separator: bad };
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(Document { text: &text[start..], ..current });
    documents
        .into_iter()
        .filter(|d| d.bad_separator.is_some() || !d.text.trim().is_empty())
        .collect()
}

/// An object that could not be read.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// The object, when its kind and name could be read.
    pub object: Option<ObjectRef>,
    /// What was wrong.
    pub reason: String,
    /// What is enforced in its place (security objects only).
    pub stand_in: Option<Box<Object>>,
}

impl Rejected {
    fn new(object: Option<ObjectRef>, reason: String) -> Self {
        Self { object, reason, stand_in: None }
    }
}

/// One object read: one the model uses, or the `apiVersion kind` of one
/// it does not.
#[derive(Debug)]
pub(crate) enum Read {
    Object(Box<Object>),
    Ignored(String),
}

/// Parses one object.
pub(crate) fn parse_object(value: Value) -> Result<Read, Rejected> {
    let api_version =
        value.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejected::new(None, "document has no kind".to_string()))?
        .to_string();
    let metadata = value.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default();
    let namespace = metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str);
    let namespaced = !matches!(kind.as_str(), "Namespace" | "Node");
    let reference = ObjectRef {
        kind: kind.clone(),
        namespace: namespaced.then(|| namespace.unwrap_or("default").to_string()),
        name: name.to_string(),
    };
    if name.is_empty() {
        return Err(Rejected::new(Some(reference), "metadata.name is missing".to_string()));
    }
    let fail = |e: String| Rejected::new(Some(reference.clone()), format!("invalid: {e}"));
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let object = match (group, kind.as_str()) {
        ("", "Namespace") => Object::Namespace(typed(value).map_err(fail)?),
        ("", "Node") => Object::Node(typed(value).map_err(fail)?),
        ("", "Pod") => {
            let mut pod: Pod = typed(value).map_err(fail)?;
            pod.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Object::Pod(Box::new(pod))
        }
        ("", "Service") => {
            let mut svc: Service = typed(value).map_err(fail)?;
            svc.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Object::Service(Box::new(svc))
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let mut slice: EndpointSlice = typed(value).map_err(fail)?;
            slice.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Object::EndpointSlice(Box::new(slice))
        }
        ("", "ServiceAccount") => {
            let mut sa: ServiceAccount = typed(value).map_err(fail)?;
            sa.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Object::ServiceAccount(Box::new(sa))
        }
        // Any group: a security kind under a misspelt apiVersion is a
        // policy the user meant, refused (and failing closed), not ignored.
        (_, "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication") => {
            super::security::parse(&kind, &api_version, &value, &reference)?
        }
        ("networking.istio.io", "ServiceEntry") => {
            Object::ServiceEntry(named(&value, &reference).map_err(fail)?)
        }
        ("gateway.networking.k8s.io", "Gateway") => {
            Object::Gateway(named(&value, &reference).map_err(fail)?)
        }
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            Object::HttpRoute(Box::new(named(&value, &reference).map_err(fail)?))
        }
        ("networking.istio.io", "VirtualService") => {
            Object::VirtualService(Box::new(named(&value, &reference).map_err(fail)?))
        }
        ("networking.istio.io", "DestinationRule") => {
            Object::DestinationRule(Box::new(named(&value, &reference).map_err(fail)?))
        }
        _ => return Ok(Read::Ignored(format!("{api_version} {kind}"))),
    };
    Ok(Read::Object(Box::new(object)))
}

fn named<S: serde::de::DeserializeOwned + Default>(
    value: &Value,
    reference: &ObjectRef,
) -> Result<Named<S>, String> {
    let spec = match value.get("spec") {
        Some(spec) => typed(spec.clone()).map_err(|e| format!("spec.{e}"))?,
        None => S::default(),
    };
    Ok(named_meta(value, reference).map_err(|e| format!("metadata: {e}"))?.with_spec(spec))
}

/// `value` as a `T`; an error names the field path (`spec.containers: ...`).
///
/// One YAML difference is mended here. Kubernetes' reader (go-yaml) takes
/// an unquoted IPv6 address ending in `::` inside a flow sequence
/// (`addresses: [fd00::]`) as the string `fd00::`; ours, following YAML
/// 1.2, reads the last `:` as a mapping indicator, giving `{"fd00:": null}`.
/// Where such a one-entry mapping stands in place of a string and its key
/// plus `:` is an IPv6 address, it is taken as that address and the value
/// is read again. Only the failing field is touched, so a mapping where a
/// mapping belongs is never rewritten.
fn typed<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, String> {
    // Each pass mends one field; a document with more than this many such
    // addresses is refused with the usual type error.
    const MAX_MENDS: usize = 64;
    for _ in 0..=MAX_MENDS {
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Ok(t),
            Err(e) => {
                let Some(mended) = at_path(&mut value, e.path()).and_then(mend_ipv6) else {
                    return Err(format!("{}: {}", e.path(), e.inner()));
                };
                if let Some(slot) = at_path(&mut value, e.path()) {
                    *slot = Value::String(mended);
                }
            }
        }
    }
    Err(format!("more than {MAX_MENDS} unquoted IPv6 addresses ending in `::`; quote them"))
}

/// The value a deserialization error's path names.
fn at_path<'v>(value: &'v mut Value, path: &serde_path_to_error::Path) -> Option<&'v mut Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(value, |v, segment| match segment {
        Segment::Seq { index } => v.get_mut(*index),
        Segment::Map { key } => v.get_mut(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}

/// `{"fd00:": null}` → `fd00::`, when that is an IPv6 address.
fn mend_ipv6(value: &mut Value) -> Option<String> {
    let map = value.as_object()?;
    let (key, inner) = map.iter().next().filter(|_| map.len() == 1)?;
    let address = format!("{key}:");
    (inner.is_null() && address.parse::<std::net::Ipv6Addr>().is_ok()).then_some(address)
}

/// Name, namespace, labels and annotations.
pub(crate) fn named_meta(
    value: &Value,
    reference: &ObjectRef,
) -> Result<Named<()>, serde_json::Error> {
    let map = |field: &str| -> Result<BTreeMap<String, String>, serde_json::Error> {
        match value.get("metadata").and_then(|m| m.get(field)) {
            Some(Value::Null) | None => Ok(BTreeMap::new()),
            Some(v) => serde_json::from_value(v.clone()),
        }
    };
    let created = value
        .get("metadata")
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Named {
        labels: map("labels")?,
        annotations: map("annotations")?,
        created,
        ..Named::bare(reference)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_documents_are_named_and_skipped() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: apps}
spec: {containers: 7}
---
: : not yaml [
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: apps}
spec: {action: DENY, rules: [{}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
kind: Pod
metadata: {namespace: apps}
";
        let (objects, bad) = parse_documents(text, "cluster.yaml");
        let kinds: Vec<String> = objects.iter().map(|o| o.reference().to_string()).collect();
        assert_eq!(kinds, ["Namespace apps", "AuthorizationPolicy apps/deny-all"]);
        assert_eq!(bad.len(), 3, "{bad:#?}");
        assert_eq!(bad[0].object.as_ref().unwrap().to_string(), "Pod apps/broken");
        assert!(bad[0].reason.starts_with("invalid"), "{}", bad[0]);
        assert!(bad[0].source.contains("document 2"));
        assert!(bad[1].reason.contains("not valid YAML"), "{}", bad[1]);
        assert!(bad[2].reason.contains("metadata.name"), "{}", bad[2]);
    }

    #[test]
    fn documents_read_as_kubernetes_reads_them() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: a}
--- # a comment is fine here
apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: a}
spec: {containers: 7}
--- {apiVersion: v1, kind: Namespace, metadata: {name: on-the-separator}}
apiVersion: v1
kind: Namespace
metadata: {name: b}
";
        let (objects, bad) = parse_documents(text, "f.yaml");
        let names: Vec<String> = objects.iter().map(|o| o.reference().to_string()).collect();
        assert_eq!(names, ["Namespace a"], "nothing after a bad separator is guessed at");
        assert_eq!(bad.len(), 2, "{bad:#?}");
        assert_eq!(bad[0].source, "f.yaml (document 2, from line 5)");
        assert!(bad[0].reason.contains("spec.containers: invalid type"), "{}", bad[0]);
        assert_eq!(bad[1].source, "f.yaml (document 3, from line 10)");
        assert!(bad[1].reason.contains("invalid YAML document separator"), "{}", bad[1]);
    }

    #[test]
    fn unquoted_ipv6_addresses_ending_in_colons_are_strings_as_kubernetes_reads_them() {
        #[derive(serde::Deserialize, Debug)]
        struct Spec {
            addresses: Vec<String>,
            hosts: Vec<String>,
        }
        let read = |yaml: &str| typed::<Spec>(serde_saphyr::from_str(yaml).unwrap());
        let spec = read("{addresses: [fd00::, 2001:db8::1, '::'], hosts: [a]}").unwrap();
        assert_eq!(spec.addresses, ["fd00::", "2001:db8::1", "::"]);
        assert_eq!(spec.hosts, ["a"]);
        // Only a mapping that stands for an IPv6 address is mended.
        let err = read("{addresses: [x: ], hosts: [a]}").unwrap_err();
        assert!(err.starts_with("addresses[0]: invalid type: map"), "{err}");
        let err = read("{addresses: [fd00::], hosts: [{fd00:: 1}]}").unwrap_err();
        assert!(err.starts_with("hosts[0]: invalid type: map"), "{err}");
    }

    #[test]
    fn list_items_are_refused_one_by_one() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": "x"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"}}]}"#;
        let (objects, bad) = parse_documents(text, "list.json");
        assert_eq!(objects.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].source, "list.json (document 1, item 0)");
        assert!(bad[0].reason.contains("spec.ports"), "{}", bad[0]);
    }

    #[test]
    fn lists_are_expanded_and_namespaces_default() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "x"}}]}"#;
        let (objects, bad) = parse_documents(text, "list.json");
        assert!(bad.is_empty(), "{bad:?}");
        let refs: Vec<String> = objects.iter().map(|o| o.reference().to_string()).collect();
        assert_eq!(refs, ["Service default/a", "Service x/b"]);
    }
}
