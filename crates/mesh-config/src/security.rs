//! Security objects (AuthorizationPolicy, PeerAuthentication,
//! RequestAuthentication) read the way an access-control rule must be
//! read: strictly, and failing closed.
//!
//! - Only API versions whose schema we know (`v1`, `v1beta1`: the same
//!   schema) are read; `security.istio.io/v9` is refused, not guessed at.
//! - Every field of the schema is declared and any other is an error
//!   (`crate::istio`), so a typo such as `principal:` is refused rather
//!   than read as "no condition". Errors name the field path
//!   (`spec.rules[0].from[0].source.principal`).
//! - A refused object does not vanish: that would widen access (a DENY
//!   policy gone, or an ALLOW policy gone with it the workload's only
//!   ALLOW). In its place stands a **fail-closed stand-in** over what the
//!   object selects (its `selector.matchLabels` when those can be read,
//!   else its whole namespace): for an AuthorizationPolicy, a DENY of
//!   everything; for a PeerAuthentication, STRICT mTLS; for a
//!   RequestAuthentication, no JWT accepted through what it targets.
//!   Where an earlier
//!   valid version was read, `crate::last_valid` puts that back instead,
//!   as Kubernetes would by refusing the broken update.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::istio::{
    AuthorizationAction, AuthorizationPolicySpec, MtlsMode, MutualTls, PeerAuthenticationSpec,
    PolicyRule, RequestAuthenticationSpec, WorkloadSelector,
};
use super::objects::{Named, Object, ObjectRef, Rejected, named_meta};

/// The `security.istio.io` versions read; both share the v1 schema.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The annotation that makes an AuthorizationPolicy a dry run.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Reads an AuthorizationPolicy or PeerAuthentication (`kind`), or refuses
/// it with the fail-closed stand-in for what it selects.
pub(crate) fn parse(
    kind: &str,
    api_version: &str,
    value: &Value,
    reference: &ObjectRef,
) -> Result<Object, Rejected> {
    let checked = check_version(api_version).and_then(|()| match kind {
        "AuthorizationPolicy" => strict(value, reference)
            .and_then(|p| check_authorization(&p.spec).map(|()| p))
            .map(Object::AuthorizationPolicy),
        "RequestAuthentication" => strict(value, reference)
            .and_then(|r| check_request_authentication(&r.spec).map(|()| r))
            .map(Object::RequestAuthentication),
        _ => strict(value, reference)
            .and_then(|p| check_peer_authentication(&p.spec).map(|()| p))
            .map(Object::PeerAuthentication),
    });
    checked.map_err(|reason| Rejected {
        object: Some(reference.clone()),
        reason,
        stand_in: Some(Box::new(stand_in(kind, value, reference))),
    })
}

fn check_version(api_version: &str) -> Result<(), String> {
    match api_version.split_once('/') {
        Some(("security.istio.io", version)) if VERSIONS.contains(&version) => Ok(()),
        _ => Err(format!(
            "apiVersion {api_version:?} is not one this mesh reads (it reads security.istio.io/{})",
            VERSIONS.join(", security.istio.io/")
        )),
    }
}

/// What the schema cannot say and Istio's validation refuses.
fn check_authorization(spec: &AuthorizationPolicySpec) -> Result<(), String> {
    let selects = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if selects && spec.is_targeted() {
        return Err("invalid: spec: selector and targetRef(s) cannot both be set".into());
    }
    Ok(())
}

/// What Istio's validation refuses in a RequestAuthentication.
fn check_request_authentication(spec: &RequestAuthenticationSpec) -> Result<(), String> {
    let selects = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if selects && spec.is_targeted() {
        return Err("invalid: spec: selector and targetRef(s) cannot both be set".into());
    }
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        if rule.issuer.is_empty() {
            return Err(format!("invalid: spec.jwtRules[{i}].issuer: required"));
        }
        if rule.jwks.is_some() && rule.jwks_uri.is_some() {
            return Err(format!(
                "invalid: spec.jwtRules[{i}]: jwks and jwksUri cannot both be set"
            ));
        }
    }
    Ok(())
}

/// Port keys are ports, and only a selector policy may set them (as in
/// Istio's validation: a namespace's or the mesh's cannot).
fn check_peer_authentication(spec: &PeerAuthenticationSpec) -> Result<(), String> {
    for port in spec.port_level_mtls.keys() {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(format!("invalid: spec.portLevelMtls.{port}: not a port number"));
        }
    }
    let selects = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !selects {
        return Err(
            "invalid: spec.portLevelMtls: only a policy with a selector may set per-port modes"
                .into(),
        );
    }
    Ok(())
}

/// The spec and metadata, every unknown field or bad value an error that
/// names its path.
fn strict<S: DeserializeOwned + Default>(
    value: &Value,
    reference: &ObjectRef,
) -> Result<Named<S>, String> {
    let spec = match value.get("spec") {
        Some(spec) => serde_path_to_error::deserialize(spec)
            .map_err(|e| format!("invalid: spec.{}: {}", e.path(), e.inner()))?,
        None => S::default(),
    };
    let meta = named_meta(value, reference).map_err(|e| format!("invalid: metadata: {e}"))?;
    Ok(meta.with_spec(spec))
}

/// What stands in for a refused object: a DENY of everything, or STRICT
/// mTLS, over the pods its selector names (the whole namespace when the
/// selector cannot be read). A targeted policy (`targetRef(s)`, no
/// selector) stays targeted, its targets kept as written: the waypoints
/// they reach deny everything until it is fixed.
fn stand_in(kind: &str, value: &Value, reference: &ObjectRef) -> Object {
    let spec = value.get("spec");
    let selector = spec
        .and_then(|s| s.get("selector"))
        .and_then(|s| s.get("matchLabels"))
        .and_then(|labels| serde_json::from_value::<BTreeMap<String, String>>(labels.clone()).ok())
        .map(|match_labels| WorkloadSelector { match_labels });
    // Targeted only when nothing else is known: a readable selector is
    // denied at the node proxies whatever else the policy said.
    let targeted = selector.is_none()
        && spec.is_some_and(|s| s.get("targetRef").is_some() || s.get("targetRefs").is_some());
    let meta = named_meta(value, reference).unwrap_or_else(|_| Named::bare(reference));
    let named = Named { fail_closed: true, ..meta };
    // Kept as written: the waypoints they name deny everything (an
    // unreadable one: every waypoint of the namespace).
    let target_ref = targeted.then(|| {
        spec.and_then(|s| s.get("targetRef"))
            .cloned()
            .unwrap_or_else(|| Value::String("unreadable".into()))
    });
    let target_refs = if targeted {
        spec.and_then(|s| s.get("targetRefs"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if kind == "RequestAuthentication" {
        // No rule can be read, so no token can be trusted: the model turns
        // a stand-in into a rule that refuses every token.
        return Object::RequestAuthentication(named.with_spec(RequestAuthenticationSpec {
            selector,
            target_ref,
            target_refs,
            jwt_rules: Vec::new(),
        }));
    }
    if kind == "AuthorizationPolicy" {
        Object::AuthorizationPolicy(named.with_spec(AuthorizationPolicySpec {
            selector,
            action: Some(AuthorizationAction::Deny),
            // One empty rule matches every connection.
            rules: vec![PolicyRule::default()],
            target_ref,
            target_refs,
            ..AuthorizationPolicySpec::default()
        }))
    } else {
        Object::PeerAuthentication(named.with_spec(PeerAuthenticationSpec {
            selector,
            mtls: Some(MutualTls { mode: Some(MtlsMode::Strict) }),
            port_level_mtls: BTreeMap::new(),
        }))
    }
}

/// What a stand-in of `kind` enforces, for messages.
pub fn stand_in_effect(kind: &str) -> &'static str {
    if kind == "RequestAuthentication" {
        return "until it is fixed, every JWT sent through the waypoints it targets is refused (401)";
    }
    if kind == "PeerAuthentication" {
        "until it is fixed, the workloads it selects (its namespace, if its selector cannot be read) require mTLS (STRICT)"
    } else {
        "until it is fixed, all traffic to the workloads it selects, or through the waypoints it targets, is denied (its namespace's, if neither can be read)"
    }
}

#[cfg(test)]
mod tests;
