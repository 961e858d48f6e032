#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

/// A signing key and its public JWK.
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec(kid: &str, p384: bool) -> Signer {
    let (alg, curve, signing) = if p384 {
        (Algorithm::ES384, "P-384", &rcgen::PKCS_ECDSA_P384_SHA384)
    } else {
        (Algorithm::ES256, "P-256", &rcgen::PKCS_ECDSA_P256_SHA256)
    };
    let pair = rcgen::KeyPair::generate_for(signing).unwrap();
    let raw = pair.public_key_raw();
    let half = (raw.len() - 1) / 2;
    Signer {
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        alg,
        jwk: json!({"kty": "EC", "crv": curve, "kid": kid,
            "x": b64u(&raw[1..=half]), "y": b64u(&raw[half + 1..])}),
    }
}

fn ed25519(kid: &str) -> Signer {
    use ring::signature::KeyPair as _;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    Signer {
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        alg: Algorithm::EdDSA,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(pair.public_key().as_ref())}),
    }
}

fn rsa(kid: &str, alg: Algorithm) -> Signer {
    let fixture: Value =
        serde_json::from_str(include_str!("../testdata/jwt-rsa-test-key.json")).unwrap();
    let der = STANDARD.decode(fixture["pkcs1_der_base64"].as_str().unwrap()).unwrap();
    Signer {
        key: EncodingKey::from_rsa_der(&der),
        alg,
        jwk: json!({"kty": "RSA", "kid": kid, "n": fixture["n"], "e": fixture["e"]}),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

const ISSUER: &str = "https://issuer.example";

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": ["api", "web"], "azp": "cli",
        "exp": now() + 600, "org": {"team": "payments"}, "admin": true})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(signer.alg);
    header.kid = signer.jwk["kid"].as_str().map(str::to_string);
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

fn jwks(keys: &[&Signer]) -> String {
    json!({"keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn rule_with(keys: &[&Signer], edit: impl FnOnce(&mut proto::JwtRule)) -> Arc<JwtRule> {
    let mut r = proto::JwtRule { issuer: ISSUER.into(), jwks: jwks(keys), ..Default::default() };
    edit(&mut r);
    Arc::new(JwtRule::new(&r, "rules[0]").unwrap())
}

fn rule(keys: &[&Signer]) -> Arc<JwtRule> {
    rule_with(keys, |_| {})
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn bearer(token: &str) -> Parts {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

#[test]
fn a_valid_token_gives_its_principal_and_is_not_forwarded() {
    let key = ec("k1", false);
    let mut parts = bearer(&sign(&key, &claims()));
    let facts = authenticate(&[rule(&[&key])], &mut parts).unwrap().unwrap();
    assert_eq!(facts.principal, format!("{ISSUER}/alice"));
    assert_eq!(facts.audiences, ["api", "web"]);
    assert_eq!(facts.presenter.as_deref(), Some("cli"));
    assert_eq!(facts.claims["org"]["team"], "payments");
    assert!(parts.headers.get("authorization").is_none(), "removed: forwardOriginalToken false");
    let mut none = request("/", &[]);
    assert_eq!(authenticate(&[rule(&[&key])], &mut none).unwrap(), None, "no token: no principal");
}

#[test]
fn every_supported_algorithm_validates() {
    for signer in [
        ec("es256", false),
        ec("es384", true),
        ed25519("ed"),
        rsa("rs256", Algorithm::RS256),
        rsa("rs384", Algorithm::RS384),
        rsa("rs512", Algorithm::RS512),
        rsa("ps256", Algorithm::PS256),
    ] {
        let mut parts = bearer(&sign(&signer, &claims()));
        let facts = authenticate(&[rule(&[&signer])], &mut parts);
        assert!(matches!(facts, Ok(Some(_))), "{:?}: {facts:?}", signer.alg);
    }
}

#[test]
fn time_issuer_audience_and_signature_are_checked() {
    let key = ec("k1", false);
    let rules = [rule_with(&[&key], |r| r.audiences = vec!["api".into()])];
    let check = |claims: Value| authenticate(&rules, &mut bearer(&sign(&key, &claims)));
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    assert!(check(claims()).unwrap().is_some());
    assert!(matches!(check(with("exp", json!(now() - 120))), Err(JwtError::Invalid(_))), "expired");
    assert!(check(with("exp", json!(now() - 30))).is_ok(), "within the clock skew");
    assert!(matches!(check(with("nbf", json!(now() + 600))), Err(JwtError::Invalid(_))), "not yet");
    assert!(
        matches!(
            check(with("iss", json!("https://evil.example"))),
            Err(JwtError::UnknownIssuer(_))
        ),
        "wrong issuer"
    );
    assert!(
        matches!(check(with("aud", json!("other"))), Err(JwtError::Invalid(_))),
        "wrong audience"
    );
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert!(matches!(check(no_aud), Err(JwtError::Invalid(_))), "audiences required, none given");
    // A rule without audiences takes any.
    let open = [rule(&[&key])];
    assert!(authenticate(&open, &mut bearer(&sign(&key, &with("aud", json!("x"))))).is_ok());
    // Signed by another key that claims the same kid.
    let impostor = ec("k1", false);
    let forged = sign(&impostor, &claims());
    assert!(matches!(authenticate(&rules, &mut bearer(&forged)), Err(JwtError::Invalid(_))));
    // A broken signature.
    let token = sign(&key, &claims());
    let tampered = format!("{}AAAA", &token[..token.len() - 4]);
    assert!(authenticate(&rules, &mut bearer(&tampered)).is_err());
}

#[test]
fn alg_none_and_key_confusion_are_refused() {
    let key = rsa("k1", Algorithm::RS256);
    let rules = [rule(&[&key])];
    let header = b64u(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64u(claims().to_string().as_bytes());
    let none = format!("{header}.{payload}.");
    assert!(matches!(authenticate(&rules, &mut bearer(&none)), Err(JwtError::Malformed(_))));
    // HS256 "signed" with the RSA public key's bytes: no key may verify HMAC.
    let n = URL_SAFE_NO_PAD.decode(key.jwk["n"].as_str().unwrap()).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&n)).unwrap();
    assert!(matches!(authenticate(&rules, &mut bearer(&confused)), Err(JwtError::Invalid(_))));
    for garbage in ["x", "a.b", "a.b.c", "....", "eyJ.eyJ.eyJ"] {
        assert!(authenticate(&rules, &mut bearer(garbage)).is_err(), "{garbage}");
    }
}

#[test]
fn keys_rotate_with_the_jwks() {
    let old = ec("old", false);
    let new = ec("new", false);
    let both = [rule(&[&old, &new])];
    assert!(authenticate(&both, &mut bearer(&sign(&old, &claims()))).unwrap().is_some());
    assert!(authenticate(&both, &mut bearer(&sign(&new, &claims()))).unwrap().is_some());
    let rotated = [rule(&[&new])];
    assert!(authenticate(&rotated, &mut bearer(&sign(&new, &claims()))).unwrap().is_some());
    assert!(matches!(
        authenticate(&rotated, &mut bearer(&sign(&old, &claims()))),
        Err(JwtError::Invalid(_))
    ));
}

#[test]
fn tokens_are_read_where_the_rule_says() {
    let key = ec("k1", false);
    let token = sign(&key, &claims());
    let custom = [rule_with(&[&key], |r| {
        r.from_headers = vec![proto::JwtHeader { name: "X-Jwt".into(), prefix: "Token ".into() }];
        r.from_params = vec!["jwt".into()];
        r.forward_original_token = true;
    })];
    let mut parts = request("/", &[("x-jwt", &format!("Token {token}"))]);
    assert!(authenticate(&custom, &mut parts).unwrap().is_some());
    assert!(parts.headers.get("x-jwt").is_some(), "forwardOriginalToken keeps it");
    assert!(
        authenticate(&custom, &mut request(&format!("/p?a=1&jwt={token}"), &[])).unwrap().is_some()
    );
    // Not where this rule reads: no token at all.
    assert_eq!(authenticate(&custom, &mut bearer(&token)).unwrap(), None);
    // Defaults: Authorization (any case of "bearer") and access_token.
    let default = [rule(&[&key])];
    let lower = request("/", &[("authorization", &format!("bearer {token}"))]);
    assert!(authenticate(&default, &mut lower.clone()).unwrap().is_some());
    assert!(
        authenticate(&default, &mut request(&format!("/?access_token={token}"), &[]))
            .unwrap()
            .is_some()
    );
    // Another rule reads a header this issuer's rule does not: refused.
    let other = rule_with(&[&key], |r| {
        r.issuer = "https://other.example".into();
        r.from_headers = vec![proto::JwtHeader { name: "x-other".into(), prefix: String::new() }];
    });
    let mixed = [rule(&[&key]), other];
    let mut parts = request("/", &[("x-other", &token)]);
    assert!(matches!(authenticate(&mixed, &mut parts), Err(JwtError::UnknownIssuer(_))));
    // Two different tokens: refused.
    let second = sign(&key, &json!({"iss": ISSUER, "sub": "bob"}));
    let mut two = request(
        &format!("/?access_token={second}"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(authenticate(&default, &mut two), Err(JwtError::Multiple));
}

#[test]
fn outputs_are_written_and_cannot_be_forged() {
    let key = ec("k1", false);
    let rules = [rule_with(&[&key], |r| {
        r.output_payload_to_header = "x-jwt-payload".into();
        r.output_claim_to_headers = vec![
            proto::ClaimToHeader { header: "x-team".into(), claim: "org.team".into() },
            proto::ClaimToHeader { header: "x-admin".into(), claim: "admin".into() },
        ];
    })];
    let token = sign(&key, &claims());
    let mut parts =
        request("/", &[("authorization", &format!("Bearer {token}")), ("x-team", "forged")]);
    authenticate(&rules, &mut parts).unwrap().unwrap();
    assert_eq!(parts.headers["x-team"], "payments");
    assert_eq!(parts.headers["x-admin"], "true");
    let payload = URL_SAFE_NO_PAD.decode(parts.headers["x-jwt-payload"].as_bytes()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap()["sub"], "alice");
    // No token: the client's own copies are removed, not passed on.
    let mut forged = request("/", &[("x-team", "forged"), ("x-jwt-payload", "e30")]);
    assert_eq!(authenticate(&rules, &mut forged).unwrap(), None);
    assert!(
        forged.headers.get("x-team").is_none() && forged.headers.get("x-jwt-payload").is_none()
    );
}

#[test]
fn bad_rules_are_errors_naming_the_field() {
    let key = ec("k1", false);
    let bad = |edit: &dyn Fn(&mut proto::JwtRule)| {
        let mut r =
            proto::JwtRule { issuer: ISSUER.into(), jwks: jwks(&[&key]), ..Default::default() };
        edit(&mut r);
        JwtRule::new(&r, "rules[2]").unwrap_err().to_string()
    };
    assert!(bad(&|r| r.jwks = "{".into()).starts_with("rules[2].jwks: not a JSON Web Key Set"));
    assert!(bad(&|r| r.jwks = r#"{"keys": []}"#.into()).contains("no keys"));
    assert!(
        bad(&|r| r.jwks = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into())
            .contains("symmetric")
    );
    assert!(bad(&|r| r.issuer.clear()).starts_with("rules[2].issuer"));
    assert!(
        bad(&|r| r.from_headers =
            vec![proto::JwtHeader { name: "bad header".into(), prefix: String::new() }])
        .starts_with("rules[2].from_headers[0]")
    );
    let mut mismatched = key.jwk.clone();
    mismatched["alg"] = json!("RS256");
    assert!(
        bad(&|r| r.jwks = json!({"keys": [mismatched.clone()]}).to_string())
            .contains("does not fit")
    );
}

#[test]
fn a_remembered_token_still_expires() {
    let key = ec("k1", false);
    let rules = [rule(&[&key])];
    let mut c = claims();
    c["exp"] = json!(now() - 59);
    let token = sign(&key, &c);
    assert!(authenticate(&rules, &mut bearer(&token)).unwrap().is_some(), "within the skew");
    assert!(authenticate(&rules, &mut bearer(&token)).unwrap().is_some(), "remembered");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(
        authenticate(&rules, &mut bearer(&token)).is_err(),
        "past the skew: refused, remembered or not"
    );
    // Another rule set (new keys) does not know it.
    let impostor = ec("k1", false);
    let good = sign(&key, &claims());
    assert!(authenticate(&rules, &mut bearer(&good)).unwrap().is_some());
    assert!(authenticate(&[rule(&[&impostor])], &mut bearer(&good)).is_err());
}
