//! JWT validation as Istio's `RequestAuthentication` asks for it, on
//! `jsonwebtoken` (signatures and time checks are that crate's; this
//! module only decides which token, which rule and which key).
//!
//! Semantics (Istio's):
//! - a request without a token passes, with no request principal (an
//!   AuthorizationPolicy on `requestPrincipals` then denies it);
//! - a request with a token that does not validate is refused (401);
//! - a token is read where a rule says (`fromHeaders` with a prefix,
//!   `fromParams`); a rule that says neither reads the `Authorization`
//!   header (`Bearer `) and the `access_token` query parameter;
//! - the token's `iss` picks the rule, which must also read the location
//!   the token was found in; `aud` must hold one of the rule's audiences
//!   when it lists any; `exp` and `nbf` are checked with 60 s of leeway
//!   (again on every use of a token the rule remembers having validated);
//! - keys: RSA (RS256/384/512, PS256/384/512), EC (ES256/384) and Ed25519
//!   (EdDSA) from the rule's JWKS. A key's `kid`, when both sides have
//!   one, must match; its `alg`, when the JWKS names one, must be the
//!   token's. Symmetric keys are refused: a JWKS is public.
//!
//! Stricter than Istio, on purpose: two different tokens on one request
//! are refused (which one the application reads is not ours to guess), and
//! the headers a rule writes (`outputPayloadToHeader`,
//! `outputClaimToHeaders`) are removed from every incoming request first,
//! so a client cannot forge them by sending no token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderName;
use http::HeaderValue;
use http::request::Parts;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mesh_proto::l7 as proto;

use crate::authz::AuthFacts;
use crate::config::ConfigError;

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// One key of a rule's JWKS.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// What it may verify.
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algorithms", &self.algorithms).finish()
    }
}

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header(HeaderName, String),
    Param(String),
}

/// One `jwtRules` entry, ready to validate.
#[derive(Debug)]
pub struct JwtRule {
    /// `iss`.
    pub issuer: String,
    audiences: Vec<String>,
    keys: Vec<Key>,
    locations: Vec<Location>,
    forward_original_token: bool,
    output_payload_to_header: Option<HeaderName>,
    output_claim_to_headers: Vec<(HeaderName, String)>,
    /// Tokens this rule validated, with their claims: a client sends the
    /// same token many times, and a signature check costs more than the
    /// rest of the request (Envoy keeps such a cache too). Bounded; a rule
    /// with new keys is a new rule, with an empty cache.
    validated: Mutex<HashMap<String, Arc<AuthFacts>>>,
}

/// Tokens remembered per rule.
const VALIDATED_TOKENS: usize = 1024;

/// Clock skew allowed on `exp` and `nbf`, seconds.
const LEEWAY: u64 = 60;

fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(name.to_ascii_lowercase())
        .map_err(|_| err(field, format!("{name:?} is not a header name")))
}

impl JwtRule {
    /// Reads one rule; `field` names it in errors.
    pub fn new(r: &proto::JwtRule, field: &str) -> Result<Self, ConfigError> {
        if r.issuer.is_empty() {
            return Err(err(format!("{field}.issuer"), "a rule needs an issuer"));
        }
        let keys = keys(&r.jwks, &format!("{field}.jwks"))?;
        let mut locations = Vec::new();
        for (i, h) in r.from_headers.iter().enumerate() {
            let name = header_name(&h.name, &format!("{field}.from_headers[{i}]"))?;
            locations.push(Location::Header(name, h.prefix.clone()));
        }
        for p in &r.from_params {
            if p.is_empty() {
                return Err(err(format!("{field}.from_params"), "an empty parameter name"));
            }
            locations.push(Location::Param(p.clone()));
        }
        if locations.is_empty() {
            locations.push(Location::Header(http::header::AUTHORIZATION, "Bearer ".into()));
            locations.push(Location::Param("access_token".into()));
        }
        let output_payload_to_header = match r.output_payload_to_header.as_str() {
            "" => None,
            h => Some(header_name(h, &format!("{field}.output_payload_to_header"))?),
        };
        let output_claim_to_headers = r
            .output_claim_to_headers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("{field}.output_claim_to_headers[{i}]");
                if c.claim.is_empty() {
                    return Err(err(at, "no claim named"));
                }
                Ok((header_name(&c.header, &at)?, c.claim.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            issuer: r.issuer.clone(),
            audiences: r.audiences.clone(),
            keys,
            locations,
            forward_original_token: r.forward_original_token,
            output_payload_to_header,
            output_claim_to_headers,
            validated: Mutex::default(),
        })
    }

    /// What `token` proved, if this rule validated it before and it is
    /// still within its time.
    fn remembered(&self, token: &str) -> Option<Arc<AuthFacts>> {
        let mut cache = self.validated.lock().unwrap_or_else(|p| p.into_inner());
        let facts = cache.get(token)?;
        let now = jsonwebtoken::get_current_timestamp();
        let time = |k: &str| facts.claims.get(k).and_then(serde_json::Value::as_u64);
        let live = time("exp").is_none_or(|exp| now <= exp + LEEWAY)
            && time("nbf").is_none_or(|nbf| now + LEEWAY >= nbf);
        if live {
            Some(facts.clone())
        } else {
            cache.remove(token);
            None
        }
    }

    fn remember(&self, token: &str, facts: &Arc<AuthFacts>) {
        let mut cache = self.validated.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VALIDATED_TOKENS {
            cache.clear();
        }
        cache.insert(token.to_string(), facts.clone());
    }

    /// The headers this rule writes (removed from every request first).
    fn output_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.output_payload_to_header
            .iter()
            .chain(self.output_claim_to_headers.iter().map(|(h, _)| h))
    }
}

/// The keys of a JWKS document; at least one must be usable. An empty
/// document means the control plane has no keys for the issuer (not
/// fetched yet): no token of it can validate.
fn keys(jwks: &str, field: &str) -> Result<Vec<Key>, ConfigError> {
    if jwks.is_empty() {
        return Ok(Vec::new());
    }
    let set: JwkSet = serde_json::from_str(jwks)
        .map_err(|e| err(field, format!("not a JSON Web Key Set: {e}")))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let family: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                jsonwebtoken::jwk::EllipticCurve::P256 => &[Algorithm::ES256],
                jsonwebtoken::jwk::EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err(err(format!("{field}.keys[{i}]"), "an unsupported curve")),
            },
            AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                return Err(err(
                    format!("{field}.keys[{i}]"),
                    "a symmetric key in a public key set; refused",
                ));
            }
        };
        let named = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(match a {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                other => {
                    return Err(err(
                        format!("{field}.keys[{i}].alg"),
                        format!("{other:?} is not supported"),
                    ));
                }
            }),
        };
        let algorithms: Vec<Algorithm> =
            family.iter().copied().filter(|a| named.is_none_or(|n| n == *a)).collect();
        if algorithms.is_empty() {
            return Err(err(format!("{field}.keys[{i}].alg"), "does not fit the key's type"));
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| err(format!("{field}.keys[{i}]"), format!("unreadable key: {e}")))?;
        out.push(Key { kid: jwk.common.key_id.clone(), key, algorithms });
    }
    if out.is_empty() {
        return Err(err(field, "no keys"));
    }
    Ok(out)
}

/// Why a request's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Two different tokens.
    #[error("more than one token on the request")]
    Multiple,
    /// Not three base64url parts with a readable header and payload, or
    /// `alg: none`.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No rule for its issuer reads where it was found.
    #[error("no rule for issuer {0:?}")]
    UnknownIssuer(String),
    /// The rule's checks failed (signature, time, audience).
    #[error("token refused: {0}")]
    Invalid(String),
}

/// A token and where it was.
struct Found {
    token: String,
    at: Location,
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn find_tokens(rules: &[Arc<JwtRule>], parts: &Parts) -> Vec<Found> {
    let mut locations: Vec<&Location> = Vec::new();
    for at in rules.iter().flat_map(|r| r.locations.iter()) {
        if !locations.contains(&at) {
            locations.push(at);
        }
    }
    let mut out: Vec<Found> = Vec::new();
    for at in locations {
        let values: Vec<String> = match at {
            Location::Header(name, prefix) => parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| {
                    // Prefixes compare case-insensitively ("bearer ").
                    let head = v.get(..prefix.len())?;
                    head.eq_ignore_ascii_case(prefix).then(|| v[prefix.len()..].trim().to_string())
                })
                .collect(),
            Location::Param(name) => query_param(parts, name).into_iter().collect(),
        };
        for token in values.into_iter().filter(|t| !t.is_empty()) {
            if !out.iter().any(|f| f.token == token) {
                out.push(Found { token, at: at.clone() });
            }
        }
    }
    out
}

/// The payload's claims, unverified: only to pick the rule by `iss`.
fn unverified_claims(token: &str, alg: Algorithm) -> Result<serde_json::Value, JwtError> {
    let mut v = Validation::new(alg);
    v.insecure_disable_signature_validation();
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(&[]), &v)
        .map(|d| d.claims)
        .map_err(|e| JwtError::Malformed(e.to_string()))
}

fn validate(
    rule: &JwtRule,
    token: &str,
    header: &jsonwebtoken::Header,
) -> Result<serde_json::Value, String> {
    let mut last = "no key of the issuer fits the token's kid and alg".to_string();
    for key in &rule.keys {
        if let (Some(want), Some(have)) = (&header.kid, &key.kid)
            && want != have
        {
            continue;
        }
        if !key.algorithms.contains(&header.alg) {
            continue;
        }
        let mut v = Validation::new(header.alg);
        v.required_spec_claims = ["iss".to_string()].into();
        v.set_issuer(&[&rule.issuer]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = LEEWAY;
        if rule.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&rule.audiences);
            v.required_spec_claims.insert("aud".into());
        }
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Finds the request's token, validates it, applies the rule's outputs
/// and returns the facts policies read; `Ok(None)`: no token.
pub fn authenticate(
    rules: &[Arc<JwtRule>],
    parts: &mut Parts,
) -> Result<Option<Arc<AuthFacts>>, JwtError> {
    for rule in rules {
        for h in rule.output_headers() {
            parts.headers.remove(h);
        }
    }
    let mut found = find_tokens(rules, parts);
    if found.len() > 1 {
        return Err(JwtError::Multiple);
    }
    let Some(Found { token, at }) = found.pop() else { return Ok(None) };
    for rule in rules.iter().filter(|r| r.locations.contains(&at)) {
        if let Some(facts) = rule.remembered(&token) {
            accept(rule, &token, &at, &facts, parts);
            return Ok(Some(facts));
        }
    }
    let header =
        jsonwebtoken::decode_header(&token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let issuer = unverified_claims(&token, header.alg)?
        .get("iss")
        .and_then(|i| i.as_str())
        .map(str::to_string)
        .ok_or_else(|| JwtError::Malformed("no iss claim".into()))?;
    let candidates: Vec<&Arc<JwtRule>> =
        rules.iter().filter(|r| r.issuer == issuer && r.locations.contains(&at)).collect();
    if candidates.is_empty() {
        return Err(JwtError::UnknownIssuer(issuer));
    }
    let mut last = String::new();
    for rule in candidates {
        match validate(rule, &token, &header) {
            Ok(claims) => {
                let facts = Arc::new(facts(rule, claims));
                rule.remember(&token, &facts);
                accept(rule, &token, &at, &facts, parts);
                return Ok(Some(facts));
            }
            Err(e) => last = e,
        }
    }
    Err(JwtError::Invalid(last))
}

/// The facts of a validated token; the rule's outputs written.
/// The facts policies read, from a validated token's claims.
fn facts(rule: &JwtRule, claims: serde_json::Value) -> AuthFacts {
    let string = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(a)) => {
            a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        _ => Vec::new(),
    };
    AuthFacts {
        principal: format!("{}/{}", rule.issuer, string("sub").unwrap_or_default()),
        audiences,
        presenter: string("azp"),
        claims: match claims {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
    }
}

/// The rule's effects on the request: the token removed unless it is
/// forwarded, the payload and claims written to their headers.
fn accept(rule: &JwtRule, token: &str, at: &Location, facts: &AuthFacts, parts: &mut Parts) {
    if !rule.forward_original_token
        && let Location::Header(name, _) = at
    {
        parts.headers.remove(name);
    }
    if let Some(h) = &rule.output_payload_to_header
        && let Some(payload) = token.split('.').nth(1)
        && let Ok(v) = HeaderValue::from_str(payload)
    {
        parts.headers.insert(h.clone(), v);
    }
    for (h, claim) in &rule.output_claim_to_headers {
        let mut path = claim.split('.');
        let mut value = path.next().and_then(|first| facts.claims.get(first));
        for part in path {
            value = value.and_then(|v| v.get(part));
        }
        let text = match value {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if let Some(v) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
            parts.headers.insert(h.clone(), v);
        }
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
