//! What HTTP authorization policies say beyond L4, parsed once and shared
//! by the control plane (which checks a policy before it sends it, so that
//! a proxy never has to refuse one) and the L7 proxies (which evaluate
//! it): path patterns and templates, and `when` keys with their values.

use std::net::IpAddr;

use super::{IpNet, StringMatch};

/// The attributes a `when` condition can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[<name>]` (lower case).
    RequestHeader(String),
    /// `source.ip`.
    SourceIp,
    /// `remote.ip`.
    RemoteIp,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
    /// `request.auth.principal`.
    AuthPrincipal,
    /// `request.auth.audiences`.
    AuthAudiences,
    /// `request.auth.presenter`.
    AuthPresenter,
    /// `request.auth.claims[a][b]...`: the path into the claims.
    AuthClaim(Vec<String>),
    /// `destination.ip`.
    DestinationIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    ConnectionSni,
}

/// A `when` value, read as its key wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionValue {
    /// Istio's string pattern (`*`, `prefix*`, `*suffix`, exact).
    Text(StringMatch),
    /// An address or block, for `source.ip`, `remote.ip`, `destination.ip`.
    Block(IpNet),
}

/// Why a `when` key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("when {key:?}: {why}")]
pub struct ConditionError {
    /// The key as written.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

impl ConditionKey {
    /// One of Istio's `when` keys; anything else is an error (a key we do
    /// not know is a condition we cannot check).
    pub fn parse(key: &str) -> Result<Self, ConditionError> {
        let error = |why: &str| ConditionError { key: key.to_string(), why: why.to_string() };
        // `[a][b]` → ["a", "b"]; none may be empty, nothing may follow.
        let brackets = |rest: &str| -> Result<Vec<String>, ConditionError> {
            let mut parts = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let inner = rest.strip_prefix('[').ok_or_else(|| error("expected [name]"))?;
                let (name, after) = inner.split_once(']').ok_or_else(|| error("unclosed ["))?;
                if name.is_empty() || name.contains('[') {
                    return Err(error("an empty or nested [name]"));
                }
                parts.push(name.to_string());
                rest = after;
            }
            if parts.is_empty() {
                return Err(error("expected [name]"));
            }
            Ok(parts)
        };
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "request.auth.principal" => ConditionKey::AuthPrincipal,
            "request.auth.audiences" => ConditionKey::AuthAudiences,
            "request.auth.presenter" => ConditionKey::AuthPresenter,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "connection.sni" => ConditionKey::ConnectionSni,
            k if k.starts_with("request.headers[") => {
                let parts = brackets(&k["request.headers".len()..])?;
                if parts.len() != 1 {
                    return Err(error("a header is named by one [name]"));
                }
                ConditionKey::RequestHeader(parts[0].to_ascii_lowercase())
            }
            k if k.starts_with("request.auth.claims[") => {
                ConditionKey::AuthClaim(brackets(&k["request.auth.claims".len()..])?)
            }
            _ => return Err(error("not a key Istio documents for HTTP")),
        })
    }

    /// Whether only an HTTP request has it: on a connection proxied as TCP,
    /// a condition on it cannot be checked.
    pub fn is_http(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RemoteIp
                | ConditionKey::AuthPrincipal
                | ConditionKey::AuthAudiences
                | ConditionKey::AuthPresenter
                | ConditionKey::AuthClaim(_)
        )
    }

    /// A value for this key: an address block for the address keys, a port
    /// number for `destination.port`, a string pattern otherwise.
    pub fn value(&self, raw: &str) -> Result<ConditionValue, ConditionError> {
        let error = |why: String| ConditionError { key: self.to_string(), why };
        match self {
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                IpNet::parse(raw)
                    .map(ConditionValue::Block)
                    .ok_or_else(|| error(format!("{raw:?} is not an address or a block")))
            }
            ConditionKey::DestinationPort => match raw.parse::<u16>() {
                Ok(_) => Ok(ConditionValue::Text(StringMatch::Exact(raw.to_string()))),
                Err(_) => Err(error(format!("{raw:?} is not a port number"))),
            },
            _ => Ok(ConditionValue::Text(StringMatch::parse(raw))),
        }
    }
}

impl std::fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConditionKey::RequestHeader(h) => write!(f, "request.headers[{h}]"),
            ConditionKey::SourceIp => f.write_str("source.ip"),
            ConditionKey::RemoteIp => f.write_str("remote.ip"),
            ConditionKey::SourceNamespace => f.write_str("source.namespace"),
            ConditionKey::SourcePrincipal => f.write_str("source.principal"),
            ConditionKey::AuthPrincipal => f.write_str("request.auth.principal"),
            ConditionKey::AuthAudiences => f.write_str("request.auth.audiences"),
            ConditionKey::AuthPresenter => f.write_str("request.auth.presenter"),
            ConditionKey::AuthClaim(path) => {
                f.write_str("request.auth.claims")?;
                path.iter().try_for_each(|p| write!(f, "[{p}]"))
            }
            ConditionKey::DestinationIp => f.write_str("destination.ip"),
            ConditionKey::DestinationPort => f.write_str("destination.port"),
            ConditionKey::ConnectionSni => f.write_str("connection.sni"),
        }
    }
}

impl ConditionValue {
    /// Whether an address matches: in the block, or equal to the pattern's
    /// text form.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            ConditionValue::Block(b) => b.contains(&ip),
            ConditionValue::Text(m) => m.matches(&ip.to_string()),
        }
    }

    /// Whether a text matches: the pattern, or, for a block, an address
    /// in it.
    pub fn matches_text(&self, text: &str) -> bool {
        match self {
            ConditionValue::Block(b) => text.parse().is_ok_and(|ip| b.contains(&ip)),
            ConditionValue::Text(m) => m.matches(text),
        }
    }
}

/// How a normalised path is matched: Istio's string forms plus its path
/// templates (`/api/{*}/items`: one segment; `/static/{**}`: any number, at
/// the end only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// A plain string form.
    String(StringMatch),
    /// Segments: literal, `{*}` or, last, `{**}`.
    Template(Vec<Segment>),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// This text.
    Literal(String),
    /// `{*}`: one non-empty segment.
    One,
    /// `{**}`: the rest, any number of segments (zero included, after
    /// its `/`).
    Rest,
}

// === impl PathMatch ===

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {pattern:?}: {why}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl PathMatch {
    /// A `paths` entry: a template when it holds `{`, else a string form.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if !pattern.contains('{') && !pattern.contains('}') {
            return Ok(PathMatch::String(StringMatch::parse(pattern)));
        }
        let error = |why| PatternError { pattern: pattern.to_string(), why };
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(error("a path template starts with /"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "{*}" => Segment::One,
                "{**}" if i + 1 == parts.len() => Segment::Rest,
                "{**}" => return Err(error("{**} may only end a path template")),
                p if p.contains('{') || p.contains('}') || p.contains('*') => {
                    return Err(error("an operator must be a whole segment: {*} or {**}"));
                }
                p => Segment::Literal(p.to_string()),
            });
        }
        Ok(PathMatch::Template(segments))
    }

    /// Whether the normalised `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::String(m) => m.matches(path),
            PathMatch::Template(segments) => {
                let Some(rest) = path.strip_prefix('/') else { return false };
                let parts: Vec<&str> = rest.split('/').collect();
                template_matches(segments, &parts)
            }
        }
    }
}

fn template_matches(segments: &[Segment], parts: &[&str]) -> bool {
    match segments.split_first() {
        None => parts.is_empty(),
        // `{**}` follows a `/`, which must be there: `/a/{**}` takes `/a/`
        // and `/a/b/c`, not `/a` (as Envoy's URI templates).
        Some((Segment::Rest, _)) => !parts.is_empty(),
        Some((first, others)) => {
            let Some((part, rest)) = parts.split_first() else { return false };
            let ok = match first {
                Segment::Literal(l) => l == part,
                Segment::One => !part.is_empty(),
                Segment::Rest => true,
            };
            ok && template_matches(others, rest)
        }
    }
}
