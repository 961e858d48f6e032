//! PeerAuthentication → DENY policies for plaintext where mTLS is required.
//!
//! A node proxy accepts HBONE (always mTLS) and, on 15006, plaintext; a
//! plaintext connection has no principal. So "STRICT" is a DENY of
//! connections without a principal:
//! - one shared policy, [`STRICT_MTLS_POLICY`], listed by every workload
//!   whose effective mode (its own selector policy, else its namespace's,
//!   else the mesh's) is STRICT on every port;
//! - for a workload whose selector policy sets `portLevelMtls`, a policy of
//!   that PeerAuthentication's own (`peer_authentication_<name>`, a name no
//!   Kubernetes object can have) with the ports where plaintext is refused:
//!   a STRICT port under a PERMISSIVE workload refuses plaintext on that
//!   port; a PERMISSIVE (or DISABLE) port under a STRICT workload accepts
//!   it there. The workload then lists that policy instead of the shared one.

use std::collections::BTreeMap;

use mesh_core::policy::{Action, Authorization, Clause, Match, PolicyScope, Rule, StringMatch};

use super::super::MeshConfig;
use super::selects;
use crate::config::istio::{MtlsMode, PeerAuthenticationSpec};
use crate::config::{ClusterState, Named};

/// Name of the policy that denies plaintext to workloads under STRICT mTLS:
/// Istio's own name for it, which no Kubernetes object can have (`_`), so a
/// user's AuthorizationPolicy in the root namespace never takes its key.
pub const STRICT_MTLS_POLICY: &str = "istio_converted_static_strict";

/// Prefix of a port-level PeerAuthentication's policy name.
const PORT_LEVEL_PREFIX: &str = "peer_authentication_";

/// The mTLS policy a workload lists (`namespace/name`), if any.
pub(super) fn selected(
    state: &ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<String> {
    if let Some(pa) = workload_policy(state, namespace, labels)
        && !pa.spec.port_level_mtls.is_empty()
    {
        let ports = port_modes(pa, inherited(state, mesh, namespace));
        return (!ports.is_empty() || base_mode(pa, state, mesh) == MtlsMode::Strict)
            .then(|| format!("{}/{PORT_LEVEL_PREFIX}{}", pa.namespace, pa.name));
    }
    (effective(state, mesh, namespace, labels) == MtlsMode::Strict)
        .then(|| format!("{}/{STRICT_MTLS_POLICY}", mesh.root_namespace))
}

/// Every mTLS policy: the shared STRICT one when any workload needs it, and
/// one per PeerAuthentication with `portLevelMtls`.
pub(super) fn policies(state: &ClusterState, mesh: &MeshConfig, out: &mut Vec<Authorization>) {
    let any_strict = state
        .peer_authentications
        .values()
        .any(|p| p.spec.mtls.as_ref().and_then(|m| m.mode) == Some(MtlsMode::Strict));
    if any_strict {
        out.push(deny_plaintext(&mesh.root_namespace, STRICT_MTLS_POLICY, Match::default()));
    }
    for pa in state.peer_authentications.values() {
        if pa.spec.port_level_mtls.is_empty() {
            continue;
        }
        let base = base_mode(pa, state, mesh);
        let modes = port_modes(pa, inherited(state, mesh, &pa.namespace));
        if base != MtlsMode::Strict && modes.is_empty() {
            continue; // plaintext accepted on every port: nothing to deny
        }
        let ports = |want_strict: bool| -> Vec<u16> {
            modes
                .iter()
                .filter(|(_, m)| (*m == MtlsMode::Strict) == want_strict)
                .map(|(p, _)| *p)
                .collect()
        };
        let ports_match = if base == MtlsMode::Strict {
            // Refused on every port but the relaxed ones.
            Match { not_destination_ports: ports(false), ..Match::default() }
        } else {
            Match { destination_ports: ports(true), ..Match::default() }
        };
        let name = format!("{PORT_LEVEL_PREFIX}{}", pa.name);
        out.push(deny_plaintext(&pa.namespace, &name, ports_match));
    }
}

/// A DENY of connections without a principal, where `ports` also matches.
fn deny_plaintext(namespace: &str, name: &str, ports: Match) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope: PolicyScope::WorkloadSelector,
        action: Action::Deny,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match { not_principals: vec![StringMatch::Presence], ..ports }],
            }],
        }],
        dry_run: false,
    }
}

/// The ports whose mode differs from the policy's base mode, with their
/// mode (`UNSET` ports follow the base). Keys were checked to be ports
/// when the object was read (`config::security`).
fn port_modes(pa: &Named<PeerAuthenticationSpec>, inherited: MtlsMode) -> Vec<(u16, MtlsMode)> {
    let base = own_mode(&pa.spec).unwrap_or(inherited);
    pa.spec
        .port_level_mtls
        .iter()
        .filter_map(|(port, m)| Some((port.parse::<u16>().ok()?, m.mode?)))
        .filter(|(_, mode)| *mode != MtlsMode::Unset)
        .filter(|(_, mode)| (*mode == MtlsMode::Strict) != (base == MtlsMode::Strict))
        .collect()
}

fn base_mode(
    pa: &Named<PeerAuthenticationSpec>,
    state: &ClusterState,
    mesh: &MeshConfig,
) -> MtlsMode {
    own_mode(&pa.spec).unwrap_or_else(|| inherited(state, mesh, &pa.namespace))
}

fn own_mode(spec: &PeerAuthenticationSpec) -> Option<MtlsMode> {
    spec.mtls.as_ref()?.mode.filter(|m| *m != MtlsMode::Unset)
}

/// The selector policy that applies to a pod (the first by name).
fn workload_policy<'a>(
    state: &'a ClusterState,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a Named<PeerAuthenticationSpec>> {
    in_namespace(state, namespace)
        .find(|p| p.spec.selector.as_ref().is_some_and(|s| selects(s, labels)))
}

fn in_namespace<'a>(
    state: &'a ClusterState,
    namespace: &str,
) -> impl Iterator<Item = &'a Named<PeerAuthenticationSpec>> {
    let ns = namespace.to_string();
    state
        .peer_authentications
        .range((ns.clone(), String::new())..)
        .take_while(move |((n, _), _)| *n == ns)
        .map(|(_, p)| p)
}

/// The mode a namespace's pods inherit: the namespace's policy (no
/// selector), else the mesh's; PERMISSIVE when nothing is set.
fn inherited(state: &ClusterState, mesh: &MeshConfig, namespace: &str) -> MtlsMode {
    let namespace_mode = |ns: &str| {
        in_namespace(state, ns)
            .filter(|p| p.spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty()))
            .find_map(|p| own_mode(&p.spec))
    };
    namespace_mode(namespace)
        .or_else(|| namespace_mode(&mesh.root_namespace))
        .unwrap_or(MtlsMode::Permissive)
}

/// The mode for a pod: its own selector policy, else what it inherits.
fn effective(
    state: &ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> MtlsMode {
    workload_policy(state, namespace, labels)
        .and_then(|p| own_mode(&p.spec))
        .unwrap_or_else(|| inherited(state, mesh, namespace))
}
