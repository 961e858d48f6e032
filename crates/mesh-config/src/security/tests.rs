//! Strict reading of security objects, and the stand-ins of refused ones.

use crate::istio::{AuthorizationAction, MtlsMode};
use crate::{BadObject, InForce, Object, parse_documents};

fn parse_one(yaml: &str) -> (Object, BadObject) {
    let (objects, bad) = parse_documents(yaml, "t.yaml");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(bad.len(), 1, "{bad:?}");
    (objects.into_iter().next().unwrap(), bad.into_iter().next().unwrap())
}

fn ap(version: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/{version}\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: apps}}\nspec: {spec}\n"
    )
}

fn pa(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: apps}}\nspec: {spec}\n"
    )
}

fn assert_deny_all_stand_in(object: &Object, selector: Option<&str>) {
    let Object::AuthorizationPolicy(p) = object else { panic!("{object:?}") };
    assert!(p.fail_closed);
    assert_eq!(p.spec.action, Some(AuthorizationAction::Deny));
    assert_eq!(p.spec.rules.len(), 1);
    assert_eq!(p.spec.rules[0], Default::default(), "one empty rule: matches everything");
    let labels =
        p.spec.selector.as_ref().map(|s| s.match_labels.values().cloned().collect::<Vec<_>>());
    assert_eq!(labels, selector.map(|s| vec![s.to_string()]));
}

#[test]
fn a_typo_is_refused_with_its_path_and_the_policy_denies_what_it_selects() {
    let (object, bad) = parse_one(&ap(
        "v1",
        "{selector: {matchLabels: {app: web}}, rules: [{from: [{source: {principal: [cluster.local/ns/apps/sa/sleep]}}]}]}",
    ));
    assert!(bad.reason.contains("spec.rules[0].from[0].source"), "{bad}");
    assert!(bad.reason.contains("unknown field `principal`"), "{bad}");
    assert_eq!(bad.in_force, Some(InForce::FailClosed));
    assert!(bad.to_string().contains("is denied"), "{bad}");
    assert_deny_all_stand_in(&object, Some("web"));
}

#[test]
fn unknown_actions_wrong_types_and_versions_are_refused() {
    for (yaml, expect) in [
        (ap("v1", "{action: DENNY, rules: [{}]}"), "spec.action: unknown variant `DENNY`"),
        (ap("v1", "{rules: oops}"), "spec.rules: invalid type: string"),
        (ap("v9", "{action: DENY, rules: [{}]}"), "\"security.istio.io/v9\" is not one"),
        (
            ap("v1", "{rules: [{when: [{key: source.ip, value: [1.2.3.4]}]}]}"),
            "spec.rules[0].when[0]",
        ),
        (
            ap("v1", "{selector: {matchLabels: {a: b}}, targetRefs: [{kind: Gateway, name: w}]}"),
            "cannot both be set",
        ),
    ] {
        let (object, bad) = parse_one(&yaml);
        assert!(bad.reason.contains(expect), "{expect}: {bad}");
        assert_eq!(bad.object.as_ref().unwrap().to_string(), "AuthorizationPolicy apps/p");
        if expect.contains("cannot both") {
            // Its selector is readable: denied there, not left to a waypoint.
            assert_deny_all_stand_in(&object, Some("b"));
            let Object::AuthorizationPolicy(p) = &object else { unreachable!() };
            assert!(!p.spec.is_targeted());
        } else {
            assert_deny_all_stand_in(&object, None);
        }
    }
}

#[test]
fn a_misspelt_group_is_refused_not_ignored() {
    let yaml = ap("v1", "{action: DENY, rules: [{}]}")
        .replace("security.istio.io/v1", "security.istio.i0/v1");
    let (object, bad) = parse_one(&yaml);
    assert!(bad.reason.contains("security.istio.i0/v1"), "{bad}");
    assert_deny_all_stand_in(&object, None);
}

#[test]
fn an_unreadable_selector_fails_closed_over_the_namespace() {
    let (object, _) = parse_one(&ap("v1", "{selector: {matchLabels: [web]}, rules: [{}]}"));
    assert_deny_all_stand_in(&object, None);
}

#[test]
fn v1beta1_reads_like_v1() {
    let (objects, bad) = parse_documents(&ap("v1beta1", "{action: DENY, rules: [{}]}"), "t");
    assert!(bad.is_empty(), "{bad:?}");
    assert!(matches!(&objects[0], Object::AuthorizationPolicy(p) if !p.fail_closed));
}

#[test]
fn a_bad_peer_authentication_means_strict() {
    for (spec, expect) in [
        ("{mtls: {mode: strict}}", "spec.mtls.mode: unknown variant `strict`"),
        ("{mtls: {mode: BLAH}}", "unknown variant `BLAH`"),
        ("{mtls: {mod: PERMISSIVE}}", "unknown field `mod`"),
        ("{portLevelMtls: {'8080': {mode: DISABLE}}}", "only a policy with a selector"),
        (
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {http: {mode: DISABLE}}}",
            "spec.portLevelMtls.http: not a port",
        ),
    ] {
        let (object, bad) = parse_one(&pa(spec));
        assert!(bad.reason.contains(expect), "{expect}: {bad}");
        assert!(bad.to_string().contains("STRICT"), "{bad}");
        let Object::PeerAuthentication(p) = object else { panic!() };
        assert!(p.fail_closed);
        assert_eq!(p.spec.mtls.unwrap().mode, Some(MtlsMode::Strict));
        assert!(p.spec.port_level_mtls.is_empty());
    }
}

#[test]
fn other_kinds_still_ignore_fields_they_do_not_use() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e, namespace: apps}\nspec: {hosts: [a.example], exportTo: ['.']}\n";
    let (objects, bad) = parse_documents(yaml, "t");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(objects.len(), 1);
}
