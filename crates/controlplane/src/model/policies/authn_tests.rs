//! RequestAuthentications, from YAML to the `mesh.l7.Authentication`s
//! waypoints are sent.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::parse_documents;
use crate::model::Model;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
"#;

const KEYS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#;

fn model(extra: &str, jwks: &Jwks) -> (Model, usize) {
    let (objects, bad) = parse_documents(&format!("{BASE}\n---\n{extra}"), "test");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".into())));
    let mut m = Model::compute(&state, &MeshConfig::default());
    m.attach_authentications(&state, &MeshConfig::default(), jwks);
    (m, bad.len())
}

fn ra(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: apps}}\nspec: {spec}\n"
    )
}

fn notes(m: &Model, name: &str) -> String {
    m.warnings
        .iter()
        .filter(|w| w.object.kind == "RequestAuthentication" && w.object.name == name)
        .map(|w| w.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

fn authn<'a>(m: &'a Model, name: &str) -> &'a proto::Authentication {
    m.l7_authentications.iter().find(|a| a.name == name).unwrap()
}

#[test]
fn inline_keys_and_locations_are_sent_to_the_waypoint() {
    let (m, bad) = model(
        &ra(
            "jwt",
            &format!(
                "{{targetRefs: [{{kind: Gateway, name: waypoint}}], jwtRules: [{{issuer: https://issuer.example, audiences: [api], jwks: '{KEYS}', fromHeaders: [{{name: x-jwt, prefix: 'Token '}}], fromParams: [jwt], outputClaimToHeaders: [{{header: x-sub, claim: sub}}], forwardOriginalToken: true}}]}}"
            ),
        ),
        &Jwks::default(),
    );
    assert_eq!(bad, 0);
    let a = authn(&m, "jwt");
    assert_eq!(a.waypoints, ["apps/waypoint"]);
    let r = &a.rules[0];
    assert_eq!(r.jwks, KEYS);
    assert_eq!(
        (r.from_headers[0].name.as_str(), r.from_headers[0].prefix.as_str()),
        ("x-jwt", "Token ")
    );
    assert_eq!(r.from_params, ["jwt"]);
    assert!(r.forward_original_token);
    assert_eq!(r.output_claim_to_headers[0].claim, "sub");
    assert!(notes(&m, "jwt").is_empty(), "{}", notes(&m, "jwt"));
    let scope = m.waypoint_scopes.get("apps/waypoint").unwrap();
    assert!(scope.contains(&format!("{AUTHN_SCOPE_PREFIX}apps/jwt")));
}

#[test]
fn keys_from_a_uri_are_inlined_once_fetched_and_kept_when_a_refresh_fails() {
    let uri = "https://issuer.example/jwks.json";
    let yaml = ra(
        "jwt",
        &format!(
            "{{targetRefs: [{{kind: Gateway, name: waypoint}}], jwtRules: [{{issuer: https://issuer.example, jwksUri: '{uri}'}}]}}"
        ),
    );
    let (m, _) = model(&yaml, &Jwks::default());
    assert_eq!(authn(&m, "jwt").rules[0].jwks, "", "no keys yet: every token refused");
    assert!(notes(&m, "jwt").contains("not fetched yet"), "{}", notes(&m, "jwt"));
    let fetched: Jwks =
        [(uri.to_string(), Fetched { keys: Some(KEYS.into()), error: None })].into();
    let (m, _) = model(&yaml, &fetched);
    assert_eq!(authn(&m, "jwt").rules[0].jwks, KEYS);
    assert!(notes(&m, "jwt").is_empty());
    let stale: Jwks = [(
        uri.to_string(),
        Fetched { keys: Some(KEYS.into()), error: Some("connection refused".into()) },
    )]
    .into();
    let (m, _) = model(&yaml, &stale);
    assert_eq!(authn(&m, "jwt").rules[0].jwks, KEYS, "the last good keys stay");
    assert!(notes(&m, "jwt").contains("connection refused"), "{}", notes(&m, "jwt"));
    let failed: Jwks =
        [(uri.to_string(), Fetched { keys: None, error: Some("404".into()) })].into();
    let (m, _) = model(&yaml, &failed);
    assert_eq!(authn(&m, "jwt").rules[0].jwks, "");
    assert!(notes(&m, "jwt").contains("refused until it succeeds"));
    assert_eq!(
        jwks_uris(
            &ClusterState::from_objects(
                parse_documents(&yaml, "t").0.into_iter().map(|o| (o, String::new()))
            )
            .0
        ),
        [uri.to_string()].into()
    );
}

#[test]
fn bad_keys_selectors_and_refused_objects_fail_closed() {
    let (m, bad) = model(
        &format!(
            "{}---\n{}---\n{}---\n{}",
            ra(
                "garbage-keys",
                "{targetRefs: [{kind: Gateway, name: waypoint}], jwtRules: [{issuer: a, jwks: 'nope'}]}"
            ),
            ra(
                "by-selector",
                "{selector: {matchLabels: {app: web}}, jwtRules: [{issuer: a, jwks: 'x'}]}"
            ),
            ra("typo", "{targetRefs: [{kind: Gateway, name: waypoint}], jwtRules: [{isuer: a}]}"),
            ra(
                "cookies",
                &format!(
                    "{{targetRefs: [{{kind: Gateway, name: waypoint}}], jwtRules: [{{issuer: a, jwks: '{KEYS}', fromCookies: [session], timeout: 10s}}]}}"
                )
            ),
        ),
        &Jwks::default(),
    );
    assert_eq!(bad, 1, "the typo is refused");
    assert_eq!(authn(&m, "garbage-keys").rules[0].jwks, "");
    assert!(notes(&m, "garbage-keys").contains("not a JSON Web Key Set"));
    assert!(m.l7_authentications.iter().all(|a| a.name != "by-selector"));
    assert!(notes(&m, "by-selector").contains("targetRefs"));
    let cookies = notes(&m, "cookies");
    assert!(cookies.contains("fromCookies") && cookies.contains("timeout (10s)"), "{cookies}");
    assert_eq!(authn(&m, "cookies").rules[0].jwks, KEYS, "the rest of the rule applies");
    let typo = authn(&m, "typo");
    assert_eq!(typo.waypoints, ["apps/waypoint"], "its targets are kept");
    assert_eq!(typo.rules.len(), 1);
    assert_eq!(typo.rules[0].issuer, REFUSED_ISSUER, "a rule no token satisfies");
    assert_eq!(typo.rules[0].jwks, "");
}
