//! AuthorizationPolicy and PeerAuthentication → L4 `Authorization`s.
//!
//! A node proxy sees only L4 facts (identities, IPs, ports). Where a rule
//! says something L4 cannot check, we fail closed:
//! - an ALLOW rule with such a condition is dropped (the policy allows less);
//! - a DENY rule keeps its other conditions and loses that one (it denies
//!   more), including a DENY made only of such conditions, which then denies
//!   everything it selects (Istio ignores those silently: istio#61126).
//!
//! Each such change is reported as a [`Warning`] on the policy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_core::policy::{
    Action, Authorization, Clause, IpNet, Match, PolicyScope, Rule, StringMatch,
};

use super::{MeshConfig, Warning};
use crate::config::istio::{Condition, PolicyRule, Source, WorkloadSelector};
use crate::config::{ClusterState, ObjectRef};

/// Name of the policy that denies plaintext to workloads under STRICT mTLS.
pub const STRICT_MTLS_POLICY: &str = "strict-mtls";

/// Every L4 policy: translated AuthorizationPolicies, plus the STRICT-mTLS
/// policy when any workload needs it.
pub fn authorizations(
    state: &ClusterState,
    mesh: &MeshConfig,
    warnings: &mut Vec<Warning>,
) -> Vec<Authorization> {
    let mut out = Vec::new();
    for ((namespace, name), policy) in &state.authorization_policies {
        let object = ObjectRef {
            kind: "AuthorizationPolicy".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let mut warn = |message: String| warnings.push(Warning { object: object.clone(), message });
        let action = match policy.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            other => {
                warn(format!("action {other} is not enforced by node proxies; policy skipped"));
                continue;
            }
        };
        if !policy.spec.target_refs.is_empty() {
            warn("targetRefs policies are enforced by waypoints, not node proxies; skipped".into());
            continue;
        }
        let mut rules = Vec::new();
        for (index, rule) in policy.spec.rules.iter().enumerate() {
            match translate_rule(rule, action) {
                RuleOutcome::Keep(r, lost) => {
                    if !lost.is_empty() {
                        warn(format!(
                            "rule {index}: {} cannot be checked at L4; ignored, so this DENY rule denies more",
                            lost.join(", ")
                        ));
                    }
                    rules.push(r);
                }
                RuleOutcome::Drop(lost) => warn(format!(
                    "rule {index}: {} cannot be checked at L4; rule dropped, so this ALLOW policy allows less",
                    lost.join(", ")
                )),
            }
        }
        out.push(Authorization {
            name: name.clone(),
            namespace: namespace.clone(),
            scope: scope(namespace, policy.spec.selector.as_ref(), mesh),
            action,
            rules,
        });
    }
    strict_mtls(state, mesh, warnings, &mut out);
    out
}

/// Names (`namespace/name`) of the selector-scoped policies that apply to
/// a pod with `labels` in `namespace`, STRICT mTLS included.
pub fn selected(
    state: &ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    // Range scans: only this namespace's policies and the root namespace's.
    let in_namespace = |ns: &str| {
        let ns = ns.to_string();
        state
            .authorization_policies
            .range((ns.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == ns)
    };
    let mut namespaces = vec![namespace];
    if namespace != mesh.root_namespace {
        namespaces.push(&mesh.root_namespace);
    }
    let mut out: Vec<String> = namespaces
        .into_iter()
        .flat_map(in_namespace)
        .filter(|(_, p)| p.spec.selector.as_ref().is_some_and(|s| selects(s, labels)))
        .filter(|(_, p)| p.spec.target_refs.is_empty())
        .map(|((ns, name), _)| format!("{ns}/{name}"))
        .collect();
    if effective_mtls(state, mesh, namespace, labels) == Some("STRICT") {
        out.push(format!("{}/{STRICT_MTLS_POLICY}", mesh.root_namespace));
    }
    out
}

fn scope(namespace: &str, selector: Option<&WorkloadSelector>, mesh: &MeshConfig) -> PolicyScope {
    if selector.is_some_and(|s| !s.match_labels.is_empty()) {
        PolicyScope::WorkloadSelector
    } else if namespace == mesh.root_namespace {
        PolicyScope::Global
    } else {
        PolicyScope::Namespace
    }
}

fn selects(selector: &WorkloadSelector, labels: &BTreeMap<String, String>) -> bool {
    !selector.match_labels.is_empty()
        && selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// === PeerAuthentication ===

/// The mTLS mode for a pod: its own selector policy, else its namespace's,
/// else the mesh's (root namespace). `None` when nothing is set.
fn effective_mtls<'a>(
    state: &'a ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a str> {
    let mode_of = |ns: &str, want_selector: bool| {
        state
            .peer_authentications
            .range((ns.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .filter(|(_, p)| match &p.spec.selector {
                Some(s) if !s.match_labels.is_empty() => want_selector && selects(s, labels),
                _ => !want_selector,
            })
            .find_map(|(_, p)| p.spec.mtls.as_ref()?.mode.as_deref().filter(|m| *m != "UNSET"))
    };
    mode_of(namespace, true)
        .or_else(|| mode_of(namespace, false))
        .or_else(|| mode_of(&mesh.root_namespace, false))
}

fn strict_mtls(
    state: &ClusterState,
    mesh: &MeshConfig,
    warnings: &mut Vec<Warning>,
    out: &mut Vec<Authorization>,
) {
    for ((namespace, name), pa) in &state.peer_authentications {
        if !pa.spec.port_level_mtls.is_empty() {
            warnings.push(Warning {
                object: ObjectRef {
                    kind: "PeerAuthentication".into(),
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                },
                message: "portLevelMtls is not supported by node proxies; the policy's main mode applies to every port".into(),
            });
        }
    }
    let any_strict = state
        .peer_authentications
        .values()
        .any(|p| p.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) == Some("STRICT"));
    if any_strict {
        // Listed by each workload whose effective mode is STRICT.
        out.push(Authorization {
            name: STRICT_MTLS_POLICY.into(),
            namespace: mesh.root_namespace.clone(),
            scope: PolicyScope::WorkloadSelector,
            action: Action::Deny,
            rules: vec![Rule {
                clauses: vec![Clause {
                    matches: vec![Match {
                        not_principals: vec![StringMatch::Presence],
                        ..Match::default()
                    }],
                }],
            }],
        });
    }
}

// === rules ===

enum RuleOutcome {
    /// Keep the rule; these conditions were ignored (DENY only).
    Keep(Rule, Vec<String>),
    /// Drop the rule (ALLOW), because of these conditions.
    Drop(Vec<String>),
}

/// One `from`/`to`/`when` entry: the L4 match, and what could not be said.
struct Translated {
    matcher: Match,
    lost: Vec<String>,
}

fn translate_rule(rule: &PolicyRule, action: Action) -> RuleOutcome {
    let mut clauses = Vec::new();
    let mut lost_all = Vec::new();
    let groups: Vec<Vec<Translated>> = vec![
        rule.from.iter().map(|f| source(&f.source)).collect(),
        rule.to.iter().map(|t| operation(&t.operation)).collect(),
    ];
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let lost: Vec<String> = group.iter().flat_map(|t| t.lost.clone()).collect();
        if !lost.is_empty() && action == Action::Allow {
            return RuleOutcome::Drop(lost);
        }
        lost_all.extend(lost);
        // An entry left with no condition matches everything: so does the
        // whole (OR-ed) clause, which then constrains nothing.
        if group.iter().any(|t| t.matcher.is_empty()) {
            continue;
        }
        clauses.push(Clause { matches: group.into_iter().map(|t| t.matcher).collect() });
    }
    for condition in &rule.when {
        let t = when(condition);
        if !t.lost.is_empty() {
            if action == Action::Allow {
                return RuleOutcome::Drop(t.lost);
            }
            lost_all.extend(t.lost);
            continue;
        }
        clauses.push(Clause { matches: vec![t.matcher] });
    }
    lost_all.sort();
    lost_all.dedup();
    RuleOutcome::Keep(Rule { clauses }, lost_all)
}

fn source(s: &Source) -> Translated {
    let mut lost = Vec::new();
    let mut m = Match {
        principals: s.principals.iter().map(|p| string_match(p)).collect(),
        not_principals: s.not_principals.iter().map(|p| string_match(p)).collect(),
        namespaces: s.namespaces.iter().map(|p| string_match(p)).collect(),
        not_namespaces: s.not_namespaces.iter().map(|p| string_match(p)).collect(),
        ..Match::default()
    };
    // With no proxy between client and node proxy, the remote IP is the source IP.
    m.source_ips = blocks("ipBlocks", s.ip_blocks.iter().chain(&s.remote_ip_blocks), &mut lost);
    m.not_source_ips =
        blocks("notIpBlocks", s.not_ip_blocks.iter().chain(&s.not_remote_ip_blocks), &mut lost);
    if !s.request_principals.is_empty() {
        lost.push("source.requestPrincipals".into());
    }
    if !s.not_request_principals.is_empty() {
        lost.push("source.notRequestPrincipals".into());
    }
    Translated { matcher: m, lost }
}

fn operation(o: &crate::config::istio::Operation) -> Translated {
    let mut lost = Vec::new();
    let m = Match {
        destination_ports: ports("ports", &o.ports, &mut lost),
        not_destination_ports: ports("notPorts", &o.not_ports, &mut lost),
        ..Match::default()
    };
    for (field, values) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        if !values.is_empty() {
            lost.push(format!("operation.{field}"));
        }
    }
    Translated { matcher: m, lost }
}

fn when(c: &Condition) -> Translated {
    let mut lost = Vec::new();
    let mut m = Match::default();
    let strings = |v: &[String]| v.iter().map(|s| string_match(s)).collect::<Vec<_>>();
    match c.key.as_str() {
        "source.ip" | "remote.ip" => {
            m.source_ips = blocks("when.values", &c.values, &mut lost);
            m.not_source_ips = blocks("when.notValues", &c.not_values, &mut lost);
        }
        "destination.ip" => {
            m.destination_ips = blocks("when.values", &c.values, &mut lost);
            m.not_destination_ips = blocks("when.notValues", &c.not_values, &mut lost);
        }
        "destination.port" => {
            m.destination_ports = ports("when.values", &c.values, &mut lost);
            m.not_destination_ports = ports("when.notValues", &c.not_values, &mut lost);
        }
        "source.namespace" => {
            m.namespaces = strings(&c.values);
            m.not_namespaces = strings(&c.not_values);
        }
        "source.principal" => {
            m.principals = strings(&c.values);
            m.not_principals = strings(&c.not_values);
        }
        other => lost.push(format!("when {other}")),
    }
    if m.is_empty() && lost.is_empty() {
        lost.push(format!("when {} without values", c.key));
    }
    Translated { matcher: m, lost }
}

/// Istio's string patterns: `*` (any), `prefix*`, `*suffix`, or exact.
fn string_match(pattern: &str) -> StringMatch {
    if pattern == "*" {
        StringMatch::Presence
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        StringMatch::Suffix(suffix.to_string())
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        StringMatch::Prefix(prefix.to_string())
    } else {
        StringMatch::Exact(pattern.to_string())
    }
}

fn blocks<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a String>,
    lost: &mut Vec<String>,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    for value in values {
        let parsed = match value.split_once('/') {
            Some((ip, len)) => ip
                .parse::<IpAddr>()
                .ok()
                .zip(len.parse::<u8>().ok())
                .and_then(|(ip, len)| IpNet::new(ip, len)),
            None => value
                .parse::<IpAddr>()
                .ok()
                .and_then(|ip| IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 })),
        };
        match parsed {
            Some(net) => out.push(net),
            None => lost.push(format!("{field} value {value:?} (not an IP or CIDR)")),
        }
    }
    out
}

fn ports(field: &str, values: &[String], lost: &mut Vec<String>) -> Vec<u16> {
    let mut out = Vec::new();
    for value in values {
        match value.parse::<u16>() {
            Ok(p) if p != 0 => out.push(p),
            _ => lost.push(format!("{field} value {value:?} (not a port)")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
