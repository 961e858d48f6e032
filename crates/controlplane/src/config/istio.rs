//! The Istio and Gateway API resources we read, as serde types. Only the
//! fields the model uses are declared; unknown fields are ignored (users'
//! YAML carries many), but a known field of the wrong type is an error.

// Fields mirror Istio's API reference one for one; their docs live there.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::Deserialize;

/// `security.istio.io/v1` AuthorizationPolicy `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicySpec {
    /// Pods it applies to; none: the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// `ALLOW` (default), `DENY`, `AUDIT` or `CUSTOM`.
    pub action: Option<String>,
    /// OR-ed rules.
    pub rules: Vec<PolicyRule>,
    /// Waypoint or service targets (L7, not enforced by node proxies).
    pub target_refs: Vec<serde_json::Value>,
}

/// `spec.selector`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels a pod must carry.
    pub match_labels: BTreeMap<String, String>,
}

/// One rule: from × to × when, AND-ed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// OR-ed sources.
    pub from: Vec<From>,
    /// OR-ed operations.
    pub to: Vec<To>,
    /// AND-ed conditions.
    pub when: Vec<Condition>,
}

/// `from[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct From {
    /// The source.
    pub source: Source,
}

/// `from[].source`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
    /// L7 (JWT): not enforceable by a node proxy.
    pub request_principals: Vec<String>,
    /// L7 (JWT): not enforceable by a node proxy.
    pub not_request_principals: Vec<String>,
}

/// `to[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct To {
    /// The operation.
    pub operation: Operation,
}

/// `to[].operation`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    /// L7.
    pub hosts: Vec<String>,
    /// L7.
    pub not_hosts: Vec<String>,
    /// L7.
    pub methods: Vec<String>,
    /// L7.
    pub not_methods: Vec<String>,
    /// L7.
    pub paths: Vec<String>,
    /// L7.
    pub not_paths: Vec<String>,
}

/// `when[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// `security.istio.io/v1` PeerAuthentication `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthenticationSpec {
    /// Pods it applies to; none: the whole namespace (or mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// The mode.
    pub mtls: Option<MutualTls>,
    /// Per-port modes (not supported by node proxies; reported).
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// `spec.mtls`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MutualTls {
    /// `STRICT`, `PERMISSIVE`, `DISABLE` or `UNSET`.
    pub mode: Option<String>,
}

/// `gateway.networking.k8s.io/v1` Gateway `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    /// `istio-waypoint` for waypoints.
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
}

/// `spec.listeners[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// `networking.istio.io/v1` ServiceEntry `spec`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    /// VIPs (IPs or CIDRs).
    pub addresses: Vec<String>,
    pub ports: Vec<ServiceEntryPort>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<String>,
    /// `NONE`, `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    pub resolution: Option<String>,
    pub endpoints: Vec<WorkloadEntrySpec>,
    pub workload_selector: Option<ServiceEntrySelector>,
}

/// `spec.ports[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntryPort {
    pub number: u16,
    pub name: String,
    pub protocol: Option<String>,
    pub target_port: Option<u16>,
}

/// `spec.endpoints[]` (a WorkloadEntry spec).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadEntrySpec {
    /// IP, or host name for DNS resolution.
    pub address: String,
    /// Port name → port, overriding the service's.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub network: Option<String>,
}

/// `spec.workloadSelector`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEntrySelector {
    pub labels: BTreeMap<String, String>,
}
