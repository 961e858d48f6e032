//! AuthorizationPolicy and PeerAuthentication → L4 `Authorization`s.
//!
//! A node proxy sees only L4 facts (identities, IPs, ports). Where a rule
//! says something L4 cannot check, we fail closed:
//! - an ALLOW rule with such a condition is dropped (the policy allows less);
//! - a DENY rule keeps its other conditions and loses that one (it denies
//!   more), including a DENY made only of such conditions, which then denies
//!   everything it selects (Istio ignores those silently: istio#61126);
//! - a `from.source` or `to.operation` with no field set is such a
//!   condition: it never makes an ALLOW rule match every caller.
//!
//! Policies the node proxy does not enforce, and say so:
//! - `AUDIT` (it changes no verdict);
//! - `targetRef`/`targetRefs`: they belong to waypoints, and [`targeted`]
//!   translates them into `mesh.l7.Authorization`s.
//!
//! `istio.io/dry-run: "true"` policies are translated like the others and
//! sent with `dry_run` set: node proxies evaluate them, log what enforcing
//! them would change, and never enforce them. Only proxies that declare
//! they understand the flag receive them ([`crate::scopes`]): one that did
//! not would enforce them.
//!
//! `CUSTOM` (an external authorizer we cannot call) is enforced as DENY of
//! what its rules match: the authorizer could have refused any of it.
//!
//! Each such change is reported as a [`Warning`] on the policy.

pub mod authn;
mod mtls;
mod rules;
pub mod targeted;

use std::collections::BTreeMap;

use mesh_core::policy::{Action, Authorization, PolicyScope};

pub use mtls::STRICT_MTLS_POLICY;

use super::{MeshConfig, Warning};
use crate::config::istio::{AuthorizationAction, AuthorizationPolicySpec, WorkloadSelector};
use crate::config::security::DRY_RUN_ANNOTATION;
use crate::config::{ClusterState, Named, ObjectRef};
use rules::{RuleOutcome, translate_rule};

/// Every L4 policy: translated AuthorizationPolicies, plus the mTLS
/// policies workloads need (`mtls`).
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
        if policy.spec.is_targeted() {
            // A waypoint's (`targeted`), which reports on it.
            continue;
        }
        let action = match policy.spec.action.unwrap_or(AuthorizationAction::Allow) {
            AuthorizationAction::Allow => Action::Allow,
            AuthorizationAction::Deny => Action::Deny,
            AuthorizationAction::Custom => {
                warn("action CUSTOM: node proxies cannot ask the external authorizer, so what its rules match is denied".into());
                Action::Deny
            }
            AuthorizationAction::Audit => {
                warn("action AUDIT changes no verdict; not enforced by node proxies".into());
                continue;
            }
        };
        let dry_run = is_dry_run(policy);
        if let Some(value) = policy.annotations.get(DRY_RUN_ANNOTATION)
            && go_bool(value).is_none()
        {
            warn(format!(
                "{DRY_RUN_ANNOTATION}: {value:?} is not a boolean; the policy is enforced"
            ));
        }
        let mut rules = Vec::new();
        for (index, rule) in policy.spec.rules.iter().enumerate() {
            match translate_rule(rule, action, namespace) {
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
            dry_run,
        });
    }
    mtls::policies(state, mesh, &mut out);
    out
}

/// Who enforces one AuthorizationPolicy, as reported on it (the debug
/// endpoint, `meshctl policy explain`, and in Kubernetes mode the object's
/// `ZtunnelAccepted` or `WaypointAccepted` condition, as istiod writes
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// Which kind of proxy would: `ztunnel` (selector, namespace and
    /// mesh-wide policies) or `waypoint` (`targetRefs`).
    pub layer: &'static str,
    /// Who does: `ztunnel`, or waypoints `namespace/name`. Empty: nobody.
    pub by: Vec<String>,
    /// What the translation changed, or why nobody enforces it (the
    /// policy's warnings).
    pub notes: Vec<String>,
}

/// Every AuthorizationPolicy's [`Enforcement`], by `namespace/name`.
/// `selected` holds the L4 policies some workload lists; `waypoints` the
/// waypoints each targeted policy reaches.
pub fn enforcement(
    state: &ClusterState,
    selected: &std::collections::HashSet<&str>,
    waypoints: &BTreeMap<String, std::collections::BTreeSet<String>>,
    warnings: &[Warning],
) -> BTreeMap<String, Enforcement> {
    let mut out = BTreeMap::new();
    for ((namespace, name), policy) in &state.authorization_policies {
        let key = format!("{namespace}/{name}");
        let mut notes: Vec<String> = warnings
            .iter()
            .filter(|w| {
                w.object.kind == "AuthorizationPolicy"
                    && w.object.namespace.as_deref() == Some(namespace.as_str())
                    && w.object.name == *name
            })
            .map(|w| w.message.clone())
            .collect();
        let enforcement = if policy.spec.is_targeted() {
            Enforcement {
                layer: "waypoint",
                by: waypoints.get(&key).into_iter().flatten().cloned().collect(),
                notes,
            }
        } else if policy.spec.action == Some(AuthorizationAction::Audit) {
            Enforcement { layer: "ztunnel", by: Vec::new(), notes }
        } else {
            let selects = policy.spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
            let by = if selects && !selected.contains(key.as_str()) {
                if notes.is_empty() {
                    notes.push("selector matches no running pod".into());
                }
                Vec::new()
            } else {
                vec!["ztunnel".to_string()]
            };
            Enforcement { layer: "ztunnel", by, notes }
        };
        out.insert(key, enforcement);
    }
    out
}

/// Names (`namespace/name`) of the selector-scoped policies that apply to
/// a pod with `labels` in `namespace`, its mTLS policy included.
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
        .filter(|(_, p)| enforced(p))
        .map(|((ns, name), _)| format!("{ns}/{name}"))
        .collect();
    out.extend(mtls::selected(state, mesh, namespace, labels));
    out
}

/// Whether node proxies evaluate the policy at all (see the module docs).
fn enforced(policy: &Named<AuthorizationPolicySpec>) -> bool {
    policy.spec.action != Some(AuthorizationAction::Audit) && !policy.spec.is_targeted()
}

/// `istio.io/dry-run` as Istio reads it; anything but a boolean (a typo
/// included) is not a dry run, so the policy is enforced: a mistake never
/// loosens a policy.
fn is_dry_run(policy: &Named<AuthorizationPolicySpec>) -> bool {
    policy.annotations.get(DRY_RUN_ANNOTATION).and_then(|v| go_bool(v)) == Some(true)
}

/// A boolean as Go's `strconv.ParseBool` reads it (Istio's reader).
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// xDS names (`namespace/name`) of the dry-run policies in `policies`.
pub fn dry_run_names(policies: &[Authorization]) -> std::collections::BTreeSet<String> {
    policies.iter().filter(|p| p.dry_run).map(Authorization::key).collect()
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

#[cfg(test)]
mod tests;
