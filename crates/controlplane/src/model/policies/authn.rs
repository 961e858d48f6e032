//! RequestAuthentications attached with `targetRefs` → one
//! `mesh.l7.Authentication` each, with its keys inlined (as istiod does):
//! `jwks` as written, `jwksUri` from what the control plane fetched
//! ([`Jwks`], kept by `crate::jwks`).
//!
//! Targets are read as for AuthorizationPolicies ([`super::targeted`]).
//! A RequestAuthentication with a selector is a sidecar's: no ambient
//! proxy validates JWTs by selector, which the warning says (an
//! AuthorizationPolicy that requires a request principal then denies at
//! ztunnel, failing closed).
//!
//! Keys that cannot be had (a `jwksUri` not fetched yet, or never
//! fetched successfully; a `jwks` that is not a key set) leave the rule
//! with no keys: the waypoint refuses every token of that issuer rather
//! than accept one it cannot check. A refused RequestAuthentication's
//! stand-in (no rules) becomes one rule no token can satisfy.

use std::collections::BTreeMap;

use mesh_core::Service;
use mesh_proto::l7 as proto;
use serde_json::Value;

use super::targeted::{ServiceIndex, add_to_scopes, targets};
use super::{MeshConfig, Warning};
use crate::config::istio::JwtRule;
use crate::config::{ClusterState, ObjectRef};
use crate::model::waypoints::Scopes;

/// Scope entries of RequestAuthentications (as
/// [`super::targeted::SCOPE_PREFIX`] for AuthorizationPolicies).
pub const AUTHN_SCOPE_PREFIX: &str = "authn~";

/// What was fetched from one `jwksUri`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The last key set fetched successfully.
    pub keys: Option<String>,
    /// Why the last fetch failed, when it did (the keys above stay).
    pub error: Option<String>,
}

/// Key sets by `jwksUri`.
pub type Jwks = BTreeMap<String, Fetched>;

/// The issuer of the rule a refused RequestAuthentication stands in with:
/// no token carries it, and its rule has no keys.
pub const REFUSED_ISSUER: &str = "mesh.dev/refused-request-authentication";

/// Every `jwksUri` the targeted RequestAuthentications name.
pub fn jwks_uris(state: &ClusterState) -> std::collections::BTreeSet<String> {
    state
        .request_authentications
        .values()
        .filter(|r| r.spec.is_targeted())
        .flat_map(|r| r.spec.jwt_rules.iter().filter_map(|j| j.jwks_uri.clone()))
        .collect()
}

/// Whether `text` reads as a JSON Web Key Set with at least one key.
fn is_key_set(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("keys").and_then(Value::as_array).map(|k| !k.is_empty()))
        .unwrap_or(false)
}

fn rule(r: &JwtRule, index: usize, jwks: &Jwks, notes: &mut Vec<String>) -> proto::JwtRule {
    let keys = match (&r.jwks, &r.jwks_uri) {
        (Some(inline), _) => Some(inline.clone()),
        (None, Some(uri)) => match jwks.get(uri) {
            Some(Fetched { keys: Some(keys), error }) => {
                if let Some(e) = error {
                    notes.push(format!(
                        "jwtRules[{index}]: fetching {uri} failed ({e}); the last keys fetched stay in use"
                    ));
                }
                Some(keys.clone())
            }
            Some(Fetched { keys: None, error: Some(e) }) => {
                notes.push(format!(
                    "jwtRules[{index}]: fetching {uri} failed ({e}); tokens of {} are refused until it succeeds",
                    r.issuer
                ));
                None
            }
            _ => {
                notes.push(format!(
                    "jwtRules[{index}]: keys from {uri} not fetched yet; tokens of {} are refused until they are",
                    r.issuer
                ));
                None
            }
        },
        (None, None) => {
            notes.push(format!(
                "jwtRules[{index}]: neither jwks nor jwksUri (discovery from the issuer is not supported); tokens of {} are refused",
                r.issuer
            ));
            None
        }
    };
    let keys = match keys {
        Some(k) if is_key_set(&k) => k,
        Some(_) => {
            notes.push(format!(
                "jwtRules[{index}]: the keys are not a JSON Web Key Set with keys; tokens of {} are refused",
                r.issuer
            ));
            String::new()
        }
        None => String::new(),
    };
    if !r.from_cookies.is_empty() {
        notes.push(format!("jwtRules[{index}].fromCookies is not supported; ignored"));
    }
    if let Some(t) = &r.timeout {
        notes.push(format!(
            "jwtRules[{index}].timeout ({t}) is not applied: the control plane gives every key fetch 5 s"
        ));
    }
    proto::JwtRule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        jwks: keys,
        from_headers: r
            .from_headers
            .iter()
            .map(|h| proto::JwtHeader { name: h.name.clone(), prefix: h.prefix.clone() })
            .collect(),
        from_params: r.from_params.clone(),
        forward_original_token: r.forward_original_token,
        output_payload_to_header: r.output_payload_to_header.clone().unwrap_or_default(),
        output_claim_to_headers: r
            .output_claim_to_headers
            .iter()
            .map(|c| proto::ClaimToHeader { header: c.header.clone(), claim: c.claim.clone() })
            .collect(),
    }
}

/// Every targeted RequestAuthentication, translated.
pub fn translate(
    state: &ClusterState,
    mesh: &MeshConfig,
    services: &[Service],
    jwks: &Jwks,
    warnings: &mut Vec<Warning>,
) -> Vec<proto::Authentication> {
    let index = ServiceIndex::new(services);
    let mut out = Vec::new();
    for ((namespace, name), ra) in &state.request_authentications {
        let object = ObjectRef {
            kind: "RequestAuthentication".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let mut notes = Vec::new();
        if !ra.spec.is_targeted() {
            warnings.push(Warning {
                object,
                message: "a RequestAuthentication without targetRefs is for sidecars; no ambient proxy validates JWTs by selector: attach it to a waypoint (targetRefs)".into(),
            });
            continue;
        }
        let refs: Vec<&Value> =
            ra.spec.target_ref.iter().chain(ra.spec.target_refs.iter()).collect();
        let (waypoints, services_targeted) =
            targets(namespace, &refs, state, mesh, &index, &mut notes);
        let mut rules: Vec<proto::JwtRule> = ra
            .spec
            .jwt_rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, i, jwks, &mut notes))
            .collect();
        if ra.fail_closed {
            rules = vec![proto::JwtRule { issuer: REFUSED_ISSUER.into(), ..Default::default() }];
        }
        if index.enforced_by(&waypoints, &services_targeted).is_empty() {
            notes.push(
                "no waypoint validates these JWTs: none of its targets is served by one".into(),
            );
        }
        warnings
            .extend(notes.into_iter().map(|message| Warning { object: object.clone(), message }));
        out.push(proto::Authentication {
            namespace: namespace.clone(),
            name: name.clone(),
            rules,
            waypoints: waypoints.into_iter().collect(),
            services: services_targeted.into_iter().collect(),
        });
    }
    out
}

/// Adds, for every waypoint, the RequestAuthentications it must be sent.
pub fn scope(authentications: &[proto::Authentication], services: &[Service], scopes: &mut Scopes) {
    let index = ServiceIndex::new(services);
    for a in authentications {
        let entry = format!("{AUTHN_SCOPE_PREFIX}{}/{}", a.namespace, a.name);
        add_to_scopes(scopes, &index, &entry, &a.waypoints, &a.services);
    }
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
