//! Where the engine applies authentication and authorization: a request's
//! JWT validated ([`crate::jwt`]), then the facts of the request or TCP
//! connection gathered from the tunnel and the request, judged by
//! [`crate::authz::evaluate`] against the policies that apply
//! ([`crate::policies`]), dry-run policies compared and logged.

use http::Uri;
use http::request::Parts;
use tracing::info;

use crate::authz::{
    AuthFacts, Decision, PathError, Policy, RequestFacts, evaluate, normalize_path,
};
use crate::engine::{Downstream, Target};
use crate::jwt::{self, JwtError};
use crate::policies::Applicable;

/// Why a request was refused before routing.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The path cannot be judged safely (400).
    Path(PathError),
    /// A policy denied it (403 `RBAC: access denied`); the reason names it.
    Denied(String),
    /// Its JWT did not validate (401).
    Token(JwtError),
}

/// The peer's principal as policies write it: without `spiffe://`.
fn principal(down: &Downstream) -> Option<&str> {
    let p = down.peer.principal.as_str();
    let p = p.strip_prefix("spiffe://").unwrap_or(p);
    (!p.is_empty()).then_some(p)
}

fn facts<'a>(
    down: &'a Downstream,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    headers: &'a http::HeaderMap,
    auth: Option<&'a AuthFacts>,
) -> RequestFacts<'a> {
    let destination = match &down.target {
        Target::Workload { endpoint } => endpoint.address,
        Target::Service { .. } => down.destination,
    };
    RequestFacts {
        source_principal: principal(down),
        source_namespace: &down.peer.namespace,
        source_ip: down.source.ip(),
        // No hop before the waypoint is trusted to report another client.
        remote_ip: down.source.ip(),
        host,
        method,
        path,
        headers,
        destination_ip: destination.ip(),
        destination_port: destination.port(),
        // The waypoint reads plaintext HTTP inside the tunnel: no SNI.
        sni: None,
        auth,
    }
}

/// Judges with the enforced policies, and logs when the dry-run ones
/// would have decided otherwise.
fn judge(
    enforced: &[Policy],
    with_dry_run: &[Policy],
    facts: &RequestFacts<'_>,
    what: &str,
) -> Decision {
    let decision = evaluate(enforced, facts);
    if !with_dry_run.is_empty() {
        let shadow = evaluate(with_dry_run, facts);
        if shadow.allowed != decision.allowed {
            info!(target: "access", source = %facts.source_ip, what,
                enforced = %decision.reason, dry_run = %shadow.reason,
                "dry-run policies would decide otherwise");
        }
    }
    for audited in &decision.audited {
        info!(target: "access", source = %facts.source_ip, what, policy = %audited,
            allowed = decision.allowed, "audited");
    }
    decision
}

/// Judges one HTTP request. On success the request's path is the
/// normalised one the policies saw (so the application cannot read it
/// differently); the reason is returned for the log.
pub(crate) fn request(
    applicable: &Applicable,
    parts: &mut Parts,
    down: &Downstream,
) -> Result<String, Refusal> {
    let normalised = normalize_path(parts.uri.path()).map_err(Refusal::Path)?;
    if normalised != parts.uri.path() {
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = format!("{normalised}{query}").parse().ok();
        match Uri::from_parts(uri) {
            Ok(u) => parts.uri = u,
            // The normalised path is made of the original's characters.
            Err(_) => return Err(Refusal::Path(PathError::BadEscape)),
        }
    }
    // The token first: policies read what it proves.
    let auth = if applicable.jwt.is_empty() {
        None
    } else {
        jwt::authenticate(&applicable.jwt, parts).map_err(Refusal::Token)?
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    let facts =
        facts(down, host, parts.method.as_str(), &normalised, &parts.headers, auth.as_deref());
    let decision = judge(&applicable.http, &applicable.http_with_dry_run, &facts, "request");
    if decision.allowed { Ok(decision.reason) } else { Err(Refusal::Denied(decision.reason)) }
}

/// Judges a connection proxied as TCP, by the policies reduced for TCP.
pub(crate) fn connection(applicable: &Applicable, down: &Downstream) -> Result<String, String> {
    let headers = http::HeaderMap::new();
    let facts = facts(down, "", "", "", &headers, None);
    let decision = judge(&applicable.tcp, &applicable.tcp_with_dry_run, &facts, "tcp");
    if decision.allowed { Ok(decision.reason) } else { Err(decision.reason) }
}
