//! HTTP authorization as Istio's `AuthorizationPolicy` decides it, for the
//! waypoint: pure code, one request's facts in, a decision out.
//!
//! Semantics (Istio's):
//! - a policy matches when any of its rules does; a policy without rules
//!   matches nothing (so an ALLOW policy with no rules allows nothing);
//! - a rule matches when its `from` (any source), its `to` (any operation)
//!   and every one of its `when` conditions match; a part left out does
//!   not constrain;
//! - a source, operation or condition matches when every field it sets
//!   does: values within a field are OR-ed, `not*` fields match when none
//!   of their values does;
//! - order: CUSTOM, then DENY, then ALLOW. A request matched by a CUSTOM
//!   policy is denied (no external authorizer is supported: failing closed
//!   for what it selects). Any matching DENY denies. When ALLOW policies
//!   exist, one must match, or the request is denied (`RBAC: access
//!   denied`). AUDIT policies never decide; matching ones are reported.
//!
//! Paths are matched only after [`normalize_path`]; a path that cannot be
//! normalised safely is refused before any policy is read. Methods are
//! compared upper-cased (a server may well take `post` for `POST`); hosts
//! case-insensitively, with and without the port. String patterns and
//! address blocks are the L4 policies' own (`mesh_core::policy`).

use std::net::IpAddr;

pub use mesh_core::policy::http::{
    ConditionError, ConditionKey, ConditionValue, PathMatch, PatternError, Segment,
};
pub use mesh_core::policy::{IpNet, StringMatch};

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Allow; when any ALLOW policy applies, what none allows is denied.
    Allow,
    /// Deny.
    Deny,
    /// Report, never decide.
    Audit,
    /// An external authorizer: not supported, so what it matches is denied.
    Custom,
}

/// One policy, as the control plane sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name`, for the reason and the log.
    pub name: String,
    /// What a match does.
    pub action: Action,
    /// OR-ed.
    pub rules: Vec<Rule>,
}

/// `from`, `to` and `when`, AND-ed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Any must match (none: no constraint).
    pub from: Vec<Source>,
    /// Any must match (none: no constraint).
    pub to: Vec<Operation>,
    /// All must match.
    pub when: Vec<Condition>,
}

/// Who sent the request. Unset fields do not constrain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// Peer principals (`<td>/ns/<ns>/sa/<sa>`).
    pub principals: Vec<StringMatch>,
    /// Not these peer principals.
    pub not_principals: Vec<StringMatch>,
    /// JWT principals (`<iss>/<sub>`).
    pub request_principals: Vec<StringMatch>,
    /// Not these JWT principals.
    pub not_request_principals: Vec<StringMatch>,
    /// Peer namespaces.
    pub namespaces: Vec<StringMatch>,
    /// Not these peer namespaces.
    pub not_namespaces: Vec<StringMatch>,
    /// The peer's address is in one of these.
    pub ip_blocks: Vec<IpNet>,
    /// ... in none of these.
    pub not_ip_blocks: Vec<IpNet>,
    /// The original client's address is in one of these.
    pub remote_ip_blocks: Vec<IpNet>,
    /// ... in none of these.
    pub not_remote_ip_blocks: Vec<IpNet>,
}

/// What the request asks for. Unset fields do not constrain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    /// `Host`, case-insensitive.
    pub hosts: Vec<StringMatch>,
    /// Not these hosts.
    pub not_hosts: Vec<StringMatch>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// Not these ports.
    pub not_ports: Vec<u16>,
    /// Methods (upper case).
    pub methods: Vec<String>,
    /// Not these methods.
    pub not_methods: Vec<String>,
    /// Normalised paths.
    pub paths: Vec<PathMatch>,
    /// Not these paths.
    pub not_paths: Vec<PathMatch>,
}

/// A `when` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What is compared.
    pub key: ConditionKey,
    /// Any must match (none: no constraint).
    pub values: Vec<ConditionValue>,
    /// None may match.
    pub not_values: Vec<ConditionValue>,
}

/// A request's JWT, once validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthFacts {
    /// `<iss>/<sub>`.
    pub principal: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// Every claim.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a request is judged on.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// The peer's principal (`<td>/ns/<ns>/sa/<sa>`), if it proved one.
    pub source_principal: Option<&'a str>,
    /// The peer's namespace ("" without an identity).
    pub source_namespace: &'a str,
    /// The peer's address.
    pub source_ip: IpAddr,
    /// The original client's address (the peer's, unless a trusted hop said
    /// otherwise).
    pub remote_ip: IpAddr,
    /// `Host` / `:authority`.
    pub host: &'a str,
    /// The method, as sent.
    pub method: &'a str,
    /// The path, normalised ([`normalize_path`]), without the query.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// The destination's address and port.
    pub destination_ip: IpAddr,
    /// The destination port.
    pub destination_port: u16,
    /// The TLS server name the client asked for, if any.
    pub sni: Option<&'a str>,
    /// The validated JWT, if the request carried one.
    pub auth: Option<&'a AuthFacts>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Let through.
    pub allowed: bool,
    /// Why: the deciding policy, or the rule that applied.
    pub reason: String,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

/// Decides on one request.
pub fn evaluate(policies: &[Policy], request: &RequestFacts<'_>) -> Decision {
    let prepared = Prepared::new(request);
    let prepared = &prepared;
    let matching = |action: Action| {
        policies
            .iter()
            .filter(move |p| p.action == action)
            .filter(move |p| policy_matches(p, request, prepared))
    };
    let audited = matching(Action::Audit).map(|p| p.name.clone()).collect();
    let deny = |reason: String, audited| Decision { allowed: false, reason, audited };
    if let Some(p) = matching(Action::Custom).next() {
        return deny(
            format!("RBAC: access denied by {} (CUSTOM is not supported; denied)", p.name),
            audited,
        );
    }
    if let Some(p) = matching(Action::Deny).next() {
        return deny(format!("RBAC: access denied by {}", p.name), audited);
    }
    let mut allows = policies.iter().filter(|p| p.action == Action::Allow).peekable();
    if allows.peek().is_none() {
        return Decision { allowed: true, reason: "no ALLOW policy".into(), audited };
    }
    match allows.find(|p| policy_matches(p, request, prepared)) {
        Some(p) => Decision { allowed: true, reason: format!("allowed by {}", p.name), audited },
        None => deny("RBAC: access denied".into(), audited),
    }
}

/// What every rule compares, computed once per request: the host lower
/// case, the method upper case.
struct Prepared {
    host: String,
    method: String,
}

impl Prepared {
    fn new(r: &RequestFacts<'_>) -> Self {
        Self { host: r.host.to_ascii_lowercase(), method: r.method.to_ascii_uppercase() }
    }
}

fn policy_matches(policy: &Policy, r: &RequestFacts<'_>, p: &Prepared) -> bool {
    policy.rules.iter().any(|rule| {
        (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, r)))
            && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, r, p)))
            && rule.when.iter().all(|c| condition_matches(c, r))
    })
}

/// Positive values: unset or any matches. Negative values: none matches.
fn field<T>(positive: &[T], negative: &[T], test: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&test)) && !negative.iter().any(&test)
}

fn source_matches(s: &Source, r: &RequestFacts<'_>) -> bool {
    let principal = |m: &StringMatch| r.source_principal.is_some_and(|p| m.matches(p));
    let request_principal = |m: &StringMatch| r.auth.is_some_and(|a| m.matches(&a.principal));
    field(&s.principals, &s.not_principals, principal)
        && field(&s.request_principals, &s.not_request_principals, request_principal)
        && field(&s.namespaces, &s.not_namespaces, |m| m.matches(r.source_namespace))
        && field(&s.ip_blocks, &s.not_ip_blocks, |b| b.contains(&r.source_ip))
        && field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, |b| b.contains(&r.remote_ip))
}

fn operation_matches(o: &Operation, r: &RequestFacts<'_>, p: &Prepared) -> bool {
    let host = p.host.as_str();
    let bare = strip_port(host);
    let host_matches = |m: &StringMatch| {
        // Patterns read from config are lower case already.
        let m = lowercased(m);
        m.matches(host) || m.matches(bare)
    };
    let method = p.method.as_str();
    let method_matches = |m: &String| m.eq_ignore_ascii_case(method);
    field(&o.hosts, &o.not_hosts, host_matches)
        && field(&o.ports, &o.not_ports, |p| *p == r.destination_port)
        && field(&o.methods, &o.not_methods, method_matches)
        && field(&o.paths, &o.not_paths, |p| p.matches(r.path))
}

fn condition_matches(c: &Condition, r: &RequestFacts<'_>) -> bool {
    let ip = match c.key {
        ConditionKey::SourceIp => Some(r.source_ip),
        ConditionKey::RemoteIp => Some(r.remote_ip),
        ConditionKey::DestinationIp => Some(r.destination_ip),
        _ => None,
    };
    if let Some(ip) = ip {
        return field(&c.values, &c.not_values, |v| v.matches_ip(ip));
    }
    let candidates = condition_values(&c.key, r);
    let any = |v: &ConditionValue| candidates.iter().any(|text| v.matches_text(text));
    field(&c.values, &c.not_values, any)
}

/// The strings a condition compares: every value of a header (and their
/// comma-joined form, as a proxy that joins them would see it), every
/// element of a list claim.
fn condition_values(key: &ConditionKey, r: &RequestFacts<'_>) -> Vec<String> {
    match key {
        ConditionKey::RequestHeader(name) => {
            let values: Vec<String> = r
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let mut out = values.clone();
            if values.len() > 1 {
                out.push(values.join(","));
            }
            out
        }
        ConditionKey::SourceIp => vec![r.source_ip.to_string()],
        ConditionKey::RemoteIp => vec![r.remote_ip.to_string()],
        ConditionKey::SourceNamespace => vec![r.source_namespace.to_string()],
        ConditionKey::SourcePrincipal => {
            r.source_principal.map(str::to_string).into_iter().collect()
        }
        ConditionKey::AuthPrincipal => r.auth.map(|a| a.principal.clone()).into_iter().collect(),
        ConditionKey::AuthAudiences => r.auth.map(|a| a.audiences.clone()).unwrap_or_default(),
        ConditionKey::AuthPresenter => {
            r.auth.and_then(|a| a.presenter.clone()).into_iter().collect()
        }
        ConditionKey::AuthClaim(path) => {
            let Some(auth) = r.auth else { return Vec::new() };
            let mut value: Option<&serde_json::Value> = None;
            for (i, part) in path.iter().enumerate() {
                value = if i == 0 {
                    auth.claims.get(part)
                } else {
                    value.and_then(|v| v.as_object()).and_then(|o| o.get(part))
                };
            }
            match value {
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(items)) => {
                    items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
                }
                Some(serde_json::Value::Bool(b)) => vec![b.to_string()],
                Some(serde_json::Value::Number(n)) => vec![n.to_string()],
                _ => Vec::new(),
            }
        }
        ConditionKey::DestinationIp => vec![r.destination_ip.to_string()],
        ConditionKey::DestinationPort => vec![r.destination_port.to_string()],
        ConditionKey::ConnectionSni => r.sni.map(str::to_string).into_iter().collect(),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once("]:").map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A pattern compared case-insensitively (hosts): as it is when it has no
/// upper case, else a lower-cased copy.
fn lowercased(m: &StringMatch) -> std::borrow::Cow<'_, StringMatch> {
    use std::borrow::Cow;
    let lower = |s: &String| s.bytes().any(|b| b.is_ascii_uppercase());
    match m {
        StringMatch::Exact(s) if lower(s) => Cow::Owned(StringMatch::Exact(s.to_ascii_lowercase())),
        StringMatch::Prefix(s) if lower(s) => {
            Cow::Owned(StringMatch::Prefix(s.to_ascii_lowercase()))
        }
        StringMatch::Suffix(s) if lower(s) => {
            Cow::Owned(StringMatch::Suffix(s.to_ascii_lowercase()))
        }
        _ => Cow::Borrowed(m),
    }
}

// === path normalisation ===

/// Why a path cannot be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It does not start with `/`.
    #[error("the path does not start with /")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-encoding")]
    BadEscape,
    /// `%2F`, `%5C` or a raw `\`: a slash the policy and the application
    /// may read differently.
    #[error("the path has an encoded slash or a backslash")]
    AmbiguousSlash,
    /// A NUL or another control character.
    #[error("the path has a control character")]
    ControlCharacter,
}

/// The path a policy is matched against, as Istio normalises it: the query
/// cut off, percent-encoded unreserved characters decoded (other encodings
/// kept, upper-cased), `.` and `..` segments resolved (never above the
/// root), runs of `/` merged. A path that could reach the application in a
/// form the policy did not see (an encoded slash or backslash, a raw
/// backslash, a control character, a broken escape) is an error: the
/// request is refused, not matched raw.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split_once('?').map_or(raw, |(p, _)| p);
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode what is safe to decode; refuse what is ambiguous.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut chars = path.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '%' => {
                let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
                let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(PathError::BadEscape);
                };
                // Both are ASCII hex digits: skip them.
                chars.next();
                chars.next();
                let c = (h * 16 + l) as u8;
                if c == b'/' || c == b'\\' {
                    return Err(PathError::AmbiguousSlash);
                }
                if c < 0x20 || c == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push_str(&format!("%{c:02X}"));
                }
            }
            '\\' => return Err(PathError::AmbiguousSlash),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            c => decoded.push(c),
        }
    }
    // Merge slashes and resolve dot segments (RFC 3986 §5.2.4).
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normalised = String::with_capacity(decoded.len());
    for s in &out {
        normalised.push('/');
        normalised.push_str(s);
    }
    if normalised.is_empty() || trailing {
        normalised.push('/');
    }
    Ok(normalised)
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
