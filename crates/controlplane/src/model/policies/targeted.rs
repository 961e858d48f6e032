//! AuthorizationPolicies attached with `targetRef`/`targetRefs` → one
//! `mesh.l7.Authorization` each, enforced by the waypoints they reach.
//!
//! Targets, as Istio reads them for waypoints:
//! - `Gateway` (gateway.networking.k8s.io) of class `istio-waypoint`, in
//!   the policy's namespace: every request through that waypoint;
//! - `GatewayClass` `istio-waypoint`, from the root namespace only: every
//!   waypoint;
//! - `Service` (core) and `ServiceEntry` (networking.istio.io) in the
//!   policy's namespace: requests addressed to that service, at its
//!   waypoint (a service without a waypoint has no proxy to enforce it,
//!   which the warning says).
//!
//! A target that names another namespace or another kind is ignored with a
//! warning. A policy none of whose targets can be read (a refused policy's
//! stand-in with garbled `targetRefs`, for instance) applies to every
//! waypoint of its namespace (every waypoint, from the root namespace):
//! what it was meant to restrict is unknown, so everything it could have
//! reached is restricted.
//!
//! Rules are checked with the parsers the waypoint uses
//! (`mesh_core::policy::http`, `StringMatch`, `IpNet`), so a waypoint never
//! has to refuse a policy. What does not read fails closed, as the L4
//! translation does: an ALLOW (or AUDIT) rule with a value that does not
//! read is dropped (the policy allows less); a DENY (or CUSTOM) rule loses
//! the whole field or condition holding it (it denies more). An empty
//! `source` or `operation` is such a value: it never makes an ALLOW rule
//! match every caller.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_core::policy::IpNet;
use mesh_core::policy::http::{ConditionKey, PathMatch};
use mesh_core::{GatewayDestination, Service};
use mesh_proto::l7 as proto;
use serde_json::Value;

use super::{MeshConfig, Warning, is_dry_run};
use crate::config::istio::{AuthorizationAction, Condition, Operation, PolicyRule, Source};
use crate::config::{ClusterState, ObjectRef};
use crate::model::waypoints::{Scopes, WAYPOINT_CLASS};

/// Scope entries of L7 policies start with this, so they never collide
/// with the names of services or workloads in the same set (`~` cannot
/// occur in a Kubernetes name).
pub const SCOPE_PREFIX: &str = "authz~";

/// Every targeted policy, translated.
pub fn translate(
    state: &ClusterState,
    mesh: &MeshConfig,
    services: &[Service],
    warnings: &mut Vec<Warning>,
) -> Vec<proto::Authorization> {
    let index = ServiceIndex::new(services);
    let mut out = Vec::new();
    for ((namespace, name), policy) in &state.authorization_policies {
        if !policy.spec.is_targeted() {
            continue;
        }
        let object = ObjectRef {
            kind: "AuthorizationPolicy".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let mut notes = Vec::new();
        let action = match policy.spec.action.unwrap_or(AuthorizationAction::Allow) {
            AuthorizationAction::Allow => proto::AuthorizationAction::Allow,
            AuthorizationAction::Deny => proto::AuthorizationAction::Deny,
            AuthorizationAction::Audit => proto::AuthorizationAction::Audit,
            AuthorizationAction::Custom => {
                notes.push("action CUSTOM: no external authorizer is supported; the waypoint denies what its rules match".to_string());
                proto::AuthorizationAction::Custom
            }
        };
        let refs: Vec<&Value> =
            policy.spec.target_ref.iter().chain(policy.spec.target_refs.iter()).collect();
        let (waypoints, targeted_services) =
            targets(namespace, &refs, state, mesh, &index, &mut notes);
        let allow =
            matches!(action, proto::AuthorizationAction::Allow | proto::AuthorizationAction::Audit);
        let mut rules = Vec::new();
        for (index, rule) in policy.spec.rules.iter().enumerate() {
            let mut lost = Vec::new();
            let translated = translate_rule(rule, namespace, allow, &mut lost);
            match translated {
                Some(r) => {
                    if !lost.is_empty() {
                        notes.push(format!(
                            "rule {index}: {} cannot be read; ignored, so this rule denies more",
                            lost.join(", ")
                        ));
                    }
                    rules.push(r);
                }
                None => notes.push(format!(
                    "rule {index}: {} cannot be read; rule dropped, so this policy allows less",
                    lost.join(", ")
                )),
            }
        }
        if index.enforced_by(&waypoints, &targeted_services).is_empty() {
            notes.push(
                "no waypoint enforces this policy: none of its targets is served by one".into(),
            );
        }
        warnings
            .extend(notes.into_iter().map(|message| Warning { object: object.clone(), message }));
        out.push(proto::Authorization {
            namespace: namespace.clone(),
            name: name.clone(),
            action: action as i32,
            rules,
            waypoints: waypoints.into_iter().collect(),
            services: targeted_services.into_iter().collect(),
            dry_run: is_dry_run(policy),
        });
    }
    out
}

/// The model's services by resource name, with the waypoint each is bound
/// to by name: built once per translation, so that resolving a policy's
/// targets costs a lookup per target, not a pass over every service.
pub(super) struct ServiceIndex<'a> {
    by_key: HashMap<String, &'a Service>,
}

impl<'a> ServiceIndex<'a> {
    pub(super) fn new(services: &'a [Service]) -> Self {
        Self { by_key: services.iter().map(|s| (s.key().to_string(), s)).collect() }
    }

    fn get(&self, key: &str) -> Option<&'a Service> {
        self.by_key.get(key).copied()
    }

    /// The waypoints (`namespace/name`) that enforce a policy attached to
    /// `waypoints` and to the services `targeted`.
    pub(super) fn enforced_by<'s>(
        &self,
        waypoints: impl IntoIterator<Item = &'s String>,
        targeted: impl IntoIterator<Item = &'s String>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = waypoints.into_iter().cloned().collect();
        out.extend(targeted.into_iter().filter_map(|key| self.get(key).and_then(waypoint_of)));
        out
    }
}

/// The waypoint (`namespace/name`) a service is bound to by name.
fn waypoint_of(s: &Service) -> Option<String> {
    match s.waypoint.as_ref().map(|w| &w.destination) {
        Some(GatewayDestination::Hostname(h)) => {
            Some(format!("{}/{}", h.namespace, h.hostname.split('.').next().unwrap_or_default()))
        }
        _ => None,
    }
}

/// Adds `entry` to the scope of every waypoint that enforces an object
/// attached to `waypoints` and `targeted` (AuthorizationPolicies and
/// RequestAuthentications alike).
pub(super) fn add_to_scopes(
    scopes: &mut Scopes,
    index: &ServiceIndex<'_>,
    entry: &str,
    waypoints: &[String],
    targeted: &[String],
) {
    for waypoint in index.enforced_by(waypoints, targeted) {
        scopes.entry(waypoint).or_default().insert(entry.to_string());
    }
}

/// Adds, for every waypoint, the policies it must be sent.
pub fn scope(policies: &[proto::Authorization], services: &[Service], scopes: &mut Scopes) {
    let index = ServiceIndex::new(services);
    for p in policies {
        let entry = format!("{SCOPE_PREFIX}{}/{}", p.namespace, p.name);
        add_to_scopes(scopes, &index, &entry, &p.waypoints, &p.services);
    }
}

/// Waypoint Gateways, `namespace/name`.
fn waypoint_gateways(state: &ClusterState) -> impl Iterator<Item = String> + '_ {
    state
        .gateways
        .iter()
        .filter(|(_, g)| g.spec.gateway_class_name == WAYPOINT_CLASS)
        .map(|((ns, name), _)| format!("{ns}/{name}"))
}

/// The waypoints and services a policy in `namespace` targets with `refs`
/// (its `targetRef` and `targetRefs`).
pub(super) fn targets(
    namespace: &String,
    refs: &[&Value],
    state: &ClusterState,
    mesh: &MeshConfig,
    index: &ServiceIndex<'_>,
    notes: &mut Vec<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let root = *namespace == mesh.root_namespace;
    let mut waypoints = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut unreadable = false;
    for (i, target) in refs.iter().enumerate() {
        let field = |k: &str| target.get(k).and_then(Value::as_str).unwrap_or_default();
        let (group, kind, name) = (field("group"), field("kind"), field("name"));
        if !target.is_object() || kind.is_empty() || name.is_empty() {
            notes.push(format!("targetRefs[{i}] is not a reference with a kind and a name"));
            unreadable = true;
            continue;
        }
        if let Some(other) = target.get("namespace").and_then(Value::as_str)
            && other != namespace
        {
            notes.push(format!(
                "targetRefs[{i}]: a policy may only target objects in its own namespace ({other:?} given); ignored"
            ));
            continue;
        }
        match (group, kind) {
            // The group may be left out: no other API has these kinds.
            ("gateway.networking.k8s.io" | "", "Gateway") => {
                match state.gateways.get(&(namespace.clone(), name.to_string())) {
                    Some(g) if g.spec.gateway_class_name != WAYPOINT_CLASS => {
                        notes.push(format!("targetRefs[{i}]: Gateway {namespace}/{name} is not a waypoint (class {WAYPOINT_CLASS}); ignored"));
                        continue;
                    }
                    Some(_) => {}
                    None => notes.push(format!(
                        "targetRefs[{i}]: Gateway {namespace}/{name} does not exist yet; the policy applies to it once it does"
                    )),
                }
                waypoints.insert(format!("{namespace}/{name}"));
            }
            ("gateway.networking.k8s.io" | "", "GatewayClass") => {
                if !root || name != WAYPOINT_CLASS {
                    notes.push(format!("targetRefs[{i}]: only the root namespace ({}) may target a GatewayClass, and only {WAYPOINT_CLASS}; ignored", mesh.root_namespace));
                    continue;
                }
                waypoints.extend(waypoint_gateways(state));
            }
            ("" | "core", "Service") => {
                let key = format!("{namespace}/{name}.{namespace}.svc.{}", mesh.cluster_domain);
                service_note(i, &key, index, notes);
                keys.insert(key);
            }
            ("networking.istio.io" | "", "ServiceEntry") => {
                match state.service_entries.get(&(namespace.clone(), name.to_string())) {
                    Some(entry) => {
                        for host in &entry.spec.hosts {
                            let key = format!("{namespace}/{host}");
                            service_note(i, &key, index, notes);
                            keys.insert(key);
                        }
                    }
                    None => notes.push(format!(
                        "targetRefs[{i}]: ServiceEntry {namespace}/{name} does not exist; ignored until it does"
                    )),
                }
            }
            _ => notes.push(format!(
                "targetRefs[{i}]: {kind} ({}) is not a target a waypoint enforces (Gateway, GatewayClass, Service, ServiceEntry); ignored",
                if group.is_empty() { "core" } else { group }
            )),
        }
    }
    if unreadable && waypoints.is_empty() && keys.is_empty() {
        // Fail closed: whatever it was meant for is among these.
        waypoints.extend(
            waypoint_gateways(state)
                .filter(|w| root || w.split_once('/').is_some_and(|(ns, _)| ns == namespace)),
        );
        notes.push(format!(
            "its targets cannot be read: applied to every waypoint {}",
            if root { "in the mesh".to_string() } else { format!("in namespace {namespace}") }
        ));
    }
    (waypoints, keys)
}

fn service_note(i: usize, key: &str, index: &ServiceIndex<'_>, notes: &mut Vec<String>) {
    match index.get(key) {
        None => notes.push(format!("targetRefs[{i}]: service {key} does not exist yet")),
        Some(s) if s.waypoint.is_none() => notes.push(format!(
            "targetRefs[{i}]: service {key} is not bound to a waypoint (istio.io/use-waypoint); nothing enforces this policy for it"
        )),
        Some(_) => {}
    }
}

/// One rule; `None` when an ALLOW rule must be dropped. `lost` names what
/// could not be read.
fn translate_rule(
    rule: &PolicyRule,
    namespace: &str,
    allow: bool,
    lost: &mut Vec<String>,
) -> Option<proto::AuthorizationRule> {
    let from: Vec<proto::AuthorizationSource> = rule
        .from
        .iter()
        .enumerate()
        .map(|(i, f)| source(&f.source, &format!("from[{i}].source"), namespace, lost))
        .collect();
    let to: Vec<proto::AuthorizationOperation> = rule
        .to
        .iter()
        .enumerate()
        .map(|(i, t)| operation(&t.operation, &format!("to[{i}].operation"), lost))
        .collect();
    let when: Vec<proto::AuthorizationCondition> = rule
        .when
        .iter()
        .enumerate()
        .filter_map(|(i, c)| condition(c, &format!("when[{i}]"), lost))
        .collect();
    if allow && !lost.is_empty() {
        return None;
    }
    Some(proto::AuthorizationRule { from, to, when })
}

/// Keeps `values` when every one reads; otherwise none of them (the field
/// no longer constrains) and the field is reported.
fn checked(
    field: String,
    values: &[String],
    reads: impl Fn(&str) -> bool,
    lost: &mut Vec<String>,
) -> Vec<String> {
    match values.iter().find(|v| !reads(v)) {
        None => values.to_vec(),
        Some(bad) => {
            lost.push(format!("{field} value {bad:?}"));
            Vec::new()
        }
    }
}

fn block(v: &str) -> bool {
    IpNet::parse(v).is_some()
}

fn source(
    s: &Source,
    at: &str,
    namespace: &str,
    lost: &mut Vec<String>,
) -> proto::AuthorizationSource {
    let accounts = |field: &str, values: &[String], lost: &mut Vec<String>| {
        let valid = |s: &str| !s.is_empty() && !s.contains(['/', '*']);
        let mut out = Vec::new();
        for value in values {
            let (ns, name) = value.split_once('/').unwrap_or((namespace, value.as_str()));
            if valid(ns) && valid(name) {
                // Any trust domain, as the L4 translation reads it.
                out.push(format!("*/ns/{ns}/sa/{name}"));
            } else {
                lost.push(format!(
                    "{at}.{field} value {value:?} (not <namespace>/<name> or <name>)"
                ));
                return Vec::new();
            }
        }
        out
    };
    let mut principals = s.principals.clone();
    principals.extend(accounts("serviceAccounts", &s.service_accounts, lost));
    let mut not_principals = s.not_principals.clone();
    not_principals.extend(accounts("notServiceAccounts", &s.not_service_accounts, lost));
    let out = proto::AuthorizationSource {
        principals,
        not_principals,
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        ip_blocks: checked(format!("{at}.ipBlocks"), &s.ip_blocks, block, lost),
        not_ip_blocks: checked(format!("{at}.notIpBlocks"), &s.not_ip_blocks, block, lost),
        remote_ip_blocks: checked(format!("{at}.remoteIpBlocks"), &s.remote_ip_blocks, block, lost),
        not_remote_ip_blocks: checked(
            format!("{at}.notRemoteIpBlocks"),
            &s.not_remote_ip_blocks,
            block,
            lost,
        ),
    };
    if *s == Source::default() {
        lost.push(format!("{at} is empty (it would match every caller)"));
    }
    out
}

fn operation(o: &Operation, at: &str, lost: &mut Vec<String>) -> proto::AuthorizationOperation {
    let port = |v: &str| v.parse::<u16>().is_ok_and(|p| p != 0);
    let path = |v: &str| PathMatch::parse(v).is_ok();
    let ports = |field: &str, values: &[String], lost: &mut Vec<String>| {
        checked(format!("{at}.{field}"), values, port, lost)
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let out = proto::AuthorizationOperation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: ports("ports", &o.ports, lost),
        not_ports: ports("notPorts", &o.not_ports, lost),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: checked(format!("{at}.paths"), &o.paths, path, lost),
        not_paths: checked(format!("{at}.notPaths"), &o.not_paths, path, lost),
    };
    if *o == Operation::default() {
        lost.push(format!("{at} is empty (it would match every request)"));
    }
    out
}

/// A condition, or `None` (reported in `lost`) when its key or a value
/// does not read, or it has no values.
fn condition(
    c: &Condition,
    at: &str,
    lost: &mut Vec<String>,
) -> Option<proto::AuthorizationCondition> {
    let key = match ConditionKey::parse(&c.key) {
        Ok(k) => k,
        Err(e) => {
            lost.push(format!("{at}: {e}"));
            return None;
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        lost.push(format!("{at}: {} without values", c.key));
        return None;
    }
    if let Some(e) = c.values.iter().chain(&c.not_values).find_map(|v| key.value(v).err()) {
        lost.push(format!("{at}: {e}"));
        return None;
    }
    Some(proto::AuthorizationCondition {
        key: c.key.clone(),
        values: c.values.clone(),
        not_values: c.not_values.clone(),
    })
}

/// The names of the waypoints each targeted policy reaches, for status and
/// `meshctl`: policy `namespace/name` → waypoints.
pub fn enforcers(
    policies: &[proto::Authorization],
    services: &[Service],
) -> BTreeMap<String, BTreeSet<String>> {
    let index = ServiceIndex::new(services);
    policies
        .iter()
        .map(|p| {
            (format!("{}/{}", p.namespace, p.name), index.enforced_by(&p.waypoints, &p.services))
        })
        .collect()
}

#[cfg(test)]
#[path = "targeted_tests.rs"]
mod tests;
