//! Property/fuzz checks of what users and callers control at the control
//! plane: YAML documents, and CSRs at the CA. Brief inside `cargo test`;
//! `cargo bolero test -p controlplane --test fuzz <name>` for long runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bolero::check;
use controlplane::ca::{CaConfig, CaMaterial, CertificateAuthority};
use controlplane::config::{InForce, parse_documents};

const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: apps}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/apps/sa/sleep]}\n    to:\n    - operation: {ports: ['8080']}\n";

#[test]
fn any_text_is_objects_or_named_errors() {
    check!().with_iterations(3_000).with_type::<String>().for_each(|text| {
        let (_, bad) = parse_documents(text, "f.yaml");
        for b in bad {
            assert!(!b.reason.is_empty());
        }
    });
}

/// A valid policy with one byte changed, inserted or removed: either it
/// still reads, or it is refused and a fail-closed stand-in (or nothing,
/// when not even its kind and name survive) takes its place. Never does a
/// damaged policy vanish while its name is still readable.
#[test]
fn a_damaged_policy_reads_or_fails_closed() {
    check!().with_iterations(5_000).with_type::<(u16, u8, u8)>().for_each(|(at, byte, how)| {
        let mut text = POLICY.as_bytes().to_vec();
        let at = usize::from(*at) % text.len();
        match how % 3 {
            0 => text[at] = *byte,
            1 => text.insert(at, *byte),
            _ => {
                text.remove(at);
            }
        }
        let Ok(text) = String::from_utf8(text) else { return };
        let (objects, bad) = parse_documents(&text, "f.yaml");
        for refused in bad.iter().filter(|b| {
            b.object.as_ref().is_some_and(|o| o.kind == "AuthorizationPolicy" && !o.name.is_empty())
        }) {
            assert_eq!(refused.in_force, Some(InForce::FailClosed), "{refused}");
            assert!(
                objects.iter().any(|o| matches!(o, controlplane::config::Object::AuthorizationPolicy(p) if p.fail_closed)),
                "a refused policy has its stand-in: {text:?}"
            );
        }
    });
}

#[test]
fn any_csr_is_checked_or_refused() {
    let material = CaMaterial::generate("cluster.local").unwrap();
    let ca = CertificateAuthority::new(&material, CaConfig::new("cluster.local")).unwrap();
    // A panic fails the check; nothing is observed of the CA after one.
    let ca = std::panic::AssertUnwindSafe(ca);
    check!().with_iterations(3_000).with_type::<(bool, Vec<u8>)>().for_each(|(armoured, body)| {
        // Raw text, or bytes inside PEM armour so the DER parser sees them.
        let text = if *armoured {
            let pem = pem::Pem::new("CERTIFICATE REQUEST", body.clone());
            pem::encode(&pem)
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        if let Err(e) = ca.check_csr(&text) {
            assert!(!e.to_string().is_empty());
        }
    });
}
