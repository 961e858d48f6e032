//! The Istio and Gateway API resources we read, as serde types.
//!
//! Security resources (AuthorizationPolicy, PeerAuthentication) declare
//! every field of their `security.istio.io/v1` schema and refuse any other
//! (`deny_unknown_fields`) and any value outside an enum: in directory mode
//! no admission webhook stands in front of the store, and a misspelt
//! `principal:` read as "no condition" would allow everyone. Other kinds
//! declare only the fields the model uses and ignore the rest (users' YAML
//! carries many); a known field of the wrong type is an error everywhere.

// Fields mirror Istio's API reference one for one; their docs live there.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::Deserialize;

/// `security.istio.io/v1` AuthorizationPolicy `spec`: every field of the
/// v1 schema, and nothing else (a misspelt field is an error, never a
/// condition silently dropped).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Pods it applies to; none: the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Absent means `ALLOW`.
    pub action: Option<AuthorizationAction>,
    /// OR-ed rules.
    pub rules: Vec<PolicyRule>,
    /// One waypoint or service target (L7, not enforced by node proxies).
    pub target_ref: Option<serde_json::Value>,
    /// Waypoint or service targets (L7, not enforced by node proxies).
    pub target_refs: Vec<serde_json::Value>,
    /// The external authorizer of a `CUSTOM` policy.
    pub provider: Option<serde_json::Value>,
}

impl AuthorizationPolicySpec {
    /// True when the policy targets waypoints or services (`targetRef` or
    /// `targetRefs`) rather than selecting pods.
    pub fn is_targeted(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// `spec.action`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// `spec.selector`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a pod must carry.
    pub match_labels: BTreeMap<String, String>,
}

/// One rule: from × to × when, AND-ed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
pub struct From {
    /// The source.
    pub source: Source,
}

/// `from[].source`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    /// L7 (JWT): not enforceable by a node proxy.
    pub request_principals: Vec<String>,
    /// L7 (JWT): not enforceable by a node proxy.
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    /// L7 (the client address an HTTP proxy reports in headers).
    pub remote_ip_blocks: Vec<String>,
    /// L7 (the client address an HTTP proxy reports in headers).
    pub not_remote_ip_blocks: Vec<String>,
    /// `<namespace>/<name>`, or `<name>` in the policy's namespace.
    pub service_accounts: Vec<String>,
    /// `<namespace>/<name>`, or `<name>` in the policy's namespace.
    pub not_service_accounts: Vec<String>,
}

/// `to[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct To {
    /// The operation.
    pub operation: Operation,
}

/// `to[].operation`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// `security.istio.io/v1` RequestAuthentication `spec`: every field of the
/// v1 schema, and nothing else (a misspelt `isuer` is an error, never a
/// rule that validates nothing).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Pods it applies to (sidecars'; not enforced in ambient).
    pub selector: Option<WorkloadSelector>,
    /// One waypoint or service target.
    pub target_ref: Option<serde_json::Value>,
    /// Waypoint or service targets.
    pub target_refs: Vec<serde_json::Value>,
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthenticationSpec {
    /// True when it targets waypoints or services.
    pub fn is_targeted(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// `spec.jwtRules[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    pub forward_original_token: bool,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub timeout: Option<String>,
}

/// `jwtRules[].fromHeaders[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    pub prefix: String,
}

/// `jwtRules[].outputClaimToHeaders[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// `security.istio.io/v1` PeerAuthentication `spec`: every field of the v1
/// schema, and nothing else.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Pods it applies to; none: the whole namespace (or mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// The mode.
    pub mtls: Option<MutualTls>,
    /// Per-port modes, keyed by the workload's port number.
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// `spec.mtls`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MutualTls {
    /// Absent means `UNSET`.
    pub mode: Option<MtlsMode>,
}

/// `spec.mtls.mode`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing scope.
    Unset,
    /// Plaintext only (node proxies still accept HBONE).
    Disable,
    /// Both.
    Permissive,
    /// mTLS only.
    Strict,
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
