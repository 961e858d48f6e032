//! L7 routes for waypoints: HTTPRoute, VirtualService and DestinationRule
//! translated into one `mesh.l7.ServiceRoutes` per service, with
//! precedence, hosts, subsets and defaults decided here so the waypoint
//! only evaluates routes in order.
//!
//! What cannot be honoured (an unsupported field, a backend that does not
//! exist, a VirtualService shadowed by an HTTPRoute) becomes a
//! [`Warning`] on the object; the rest of the object still applies.
//!
//! Precedence (Gateway API, per match): an Exact path before a PathPrefix,
//! longer prefixes first, then regular expressions; then a method match,
//! more header matches, more query matches; ties go to the older route,
//! then the route's `namespace/name`, then rule and match order.
//! VirtualService routes keep their written order (first match wins).
//! When both kinds route one service, the HTTPRoutes apply and the
//! VirtualServices are reported as ignored for it (Istio's rule for
//! waypoints).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mesh_config::routing::{
    self, DestinationRuleSpec, HttpRouteFilter, HttpRouteSpec, IstioStringMatch,
    VirtualServiceSpec, parse_duration,
};
use mesh_core::{GatewayDestination, Service, Workload};
use mesh_proto::l7 as proto;
use mesh_proto::prost_types;

use super::waypoints::WAYPOINT_CLASS;
use super::{MeshConfig, Warning};
use crate::config::{ClusterState, Named, ObjectRef};

/// Every service's routes, and what each fronted service forwards to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    /// Service resource name (`namespace/hostname`) → its routes.
    pub by_service: BTreeMap<String, proto::ServiceRoutes>,
    /// Fronted service → the other services its routes send to (they join
    /// the waypoint's scope).
    pub backends: BTreeMap<String, BTreeSet<String>>,
}

/// Istio's default retry policy for HTTP routes: two retries when no
/// connection could be made or the stream was reset.
fn default_retry() -> proto::Retry {
    proto::Retry {
        attempts: 2,
        backoff: Some(duration(Duration::from_millis(25))),
        on_connect_failure: true,
        on_reset: true,
        ..Default::default()
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Collects warnings for one object.
struct Notes<'a> {
    object: ObjectRef,
    out: &'a mut Vec<Warning>,
}

impl Notes<'_> {
    fn warn(&mut self, message: impl Into<String>) {
        self.out.push(Warning { object: self.object.clone(), message: message.into() });
    }

    fn unknown(&mut self, at: &str, unknown: &routing::Unknown) {
        for field in unknown.keys() {
            self.warn(format!("{at}{field} is not supported; ignored"));
        }
    }
}

fn reference<S>(kind: &str, named: &Named<S>) -> ObjectRef {
    ObjectRef {
        kind: kind.into(),
        namespace: Some(named.namespace.clone()),
        name: named.name.clone(),
    }
}

/// Services by hostname, and a host name as a namespace's users write it.
struct Hosts<'a> {
    by_hostname: HashMap<&'a str, &'a Service>,
    domain: &'a str,
}

impl<'a> Hosts<'a> {
    fn new(services: &'a [Service], mesh: &'a MeshConfig) -> Self {
        Self {
            by_hostname: services.iter().map(|s| (s.hostname.as_str(), s)).collect(),
            domain: &mesh.cluster_domain,
        }
    }

    /// `reviews` → `reviews.<namespace>.svc.<domain>`; `reviews.apps` →
    /// `reviews.apps.svc.<domain>`; anything longer is taken as written.
    fn fqdn(&self, host: &str, namespace: &str) -> String {
        match host.matches('.').count() {
            0 => format!("{host}.{namespace}.svc.{}", self.domain),
            1 => format!("{host}.svc.{}", self.domain),
            _ => host.to_string(),
        }
    }

    /// The services a VirtualService or DestinationRule host names.
    fn resolve(&self, host: &str, namespace: &str) -> Vec<&'a Service> {
        if let Some(suffix) = host.strip_prefix('*') {
            let mut found: Vec<&Service> = self
                .by_hostname
                .values()
                .filter(|s| s.hostname.ends_with(suffix))
                .copied()
                .collect();
            found.sort_by(|a, b| a.hostname.cmp(&b.hostname));
            return found;
        }
        self.by_hostname.get(self.fqdn(host, namespace).as_str()).copied().into_iter().collect()
    }

    fn by_name(&self, name: &str, namespace: &str) -> Option<&'a Service> {
        self.by_hostname.get(format!("{name}.{namespace}.svc.{}", self.domain).as_str()).copied()
    }
}

/// The protocol of each port of a service, as Istio decides it:
/// `appProtocol` first, then the port name's prefix (`http-web`).
fn port_protocols(state: &ClusterState, service: &Service) -> Vec<proto::PortProtocol> {
    let classify = |word: &str| -> proto::Protocol {
        match word.to_ascii_lowercase().as_str() {
            "http" | "http-web" => proto::Protocol::Http,
            "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => proto::Protocol::Http2,
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "udp" | "kubernetes.io/ws"
            | "kubernetes.io/wss" => proto::Protocol::Tcp,
            _ => proto::Protocol::Undeclared,
        }
    };
    let by_name = |name: &str| {
        let prefix = name.split('-').next().unwrap_or_default();
        classify(prefix)
    };
    let key = (service.namespace.clone(), service.name.clone());
    if let Some(svc) = state.services.get(&key) {
        let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        return ports
            .iter()
            .map(|p| {
                let protocol = match p.app_protocol.as_deref() {
                    Some(a) if classify(a) != proto::Protocol::Undeclared => classify(a),
                    _ => by_name(p.name.as_deref().unwrap_or_default()),
                };
                proto::PortProtocol {
                    port: u32::try_from(p.port).unwrap_or(0),
                    protocol: protocol as i32,
                }
            })
            .filter(|p| p.port != 0)
            .collect();
    }
    if let Some(entry) = state.service_entries.get(&key) {
        return entry
            .spec
            .ports
            .iter()
            .map(|p| proto::PortProtocol {
                port: u32::from(p.number),
                protocol: classify(p.protocol.as_deref().unwrap_or_default()) as i32,
            })
            .collect();
    }
    Vec::new()
}

fn string_match(kind: proto::string_match::Kind) -> Option<proto::StringMatch> {
    Some(proto::StringMatch { kind: Some(kind) })
}

fn check_regex(re: &str) -> Result<(), String> {
    regex::RegexBuilder::new(re).size_limit(1 << 20).build().map(|_| ()).map_err(|e| e.to_string())
}

fn edits(m: &routing::HeaderModifier) -> proto::HeaderEdits {
    let pairs = |v: &[routing::NameValue]| {
        v.iter()
            .map(|h| proto::Header { name: h.name.to_ascii_lowercase(), value: h.value.clone() })
            .collect()
    };
    proto::HeaderEdits { set: pairs(&m.set), add: pairs(&m.add), remove: m.remove.clone() }
}

fn merge(into: &mut Option<proto::HeaderEdits>, more: proto::HeaderEdits) {
    let e = into.get_or_insert_with(Default::default);
    e.set.extend(more.set);
    e.add.extend(more.add);
    e.remove.extend(more.remove);
}

fn percent_of_fraction(f: &routing::Fraction) -> f64 {
    let denominator = f.denominator.unwrap_or(100).max(1);
    (f64::from(f.numerator) * 100.0 / f64::from(denominator)).min(100.0)
}

/// One HTTPRoute match, ready to be sorted among the others of its service.
struct Ranked {
    rank: (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>),
    age: (Option<String>, String, String),
    position: (usize, usize),
    route: proto::Route,
}

/// The services an HTTPRoute attaches to, with the port a parentRef names.
fn http_route_parents<'a>(
    route: &Named<HttpRouteSpec>,
    state: &ClusterState,
    hosts: &Hosts<'a>,
    fronted_by: &dyn Fn(&Service, &str, &str) -> bool,
    notes: &mut Notes<'_>,
) -> Vec<(&'a Service, Option<u16>)> {
    let mut out = Vec::new();
    for (i, parent) in route.spec.parent_refs.iter().enumerate() {
        notes.unknown(&format!("spec.parentRefs[{i}]."), &parent.unknown);
        let namespace = parent.namespace.clone().unwrap_or_else(|| route.namespace.clone());
        let group = parent.group.as_deref().unwrap_or("gateway.networking.k8s.io");
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        match (group, kind) {
            ("" | "core", "Service") => match hosts.by_name(&parent.name, &namespace) {
                Some(s) if s.waypoint.is_some() => out.push((s, parent.port)),
                Some(s) => notes.warn(format!(
                    "parentRefs[{i}]: service {} is not bound to a waypoint (istio.io/use-waypoint); the route has no effect",
                    s.hostname
                )),
                None => notes.warn(format!("parentRefs[{i}]: service {namespace}/{} does not exist", parent.name)),
            },
            ("gateway.networking.k8s.io", "Gateway") => {
                let is_waypoint = state
                    .gateways
                    .get(&(namespace.clone(), parent.name.clone()))
                    .is_some_and(|g| g.spec.gateway_class_name == WAYPOINT_CLASS);
                if !is_waypoint {
                    notes.warn(format!(
                        "parentRefs[{i}]: Gateway {namespace}/{} is not a waypoint; only waypoints are served",
                        parent.name
                    ));
                    continue;
                }
                let mut fronted: Vec<&Service> = hosts
                    .by_hostname
                    .values()
                    .filter(|s| fronted_by(s, &namespace, &parent.name))
                    .filter(|s| {
                        route.spec.hostnames.is_empty()
                            || route.spec.hostnames.iter().any(|h| {
                                *h == s.hostname
                                    || *h == s.name
                                    || h.strip_prefix('*').is_some_and(|suffix| s.hostname.ends_with(suffix))
                            })
                    })
                    .copied()
                    .collect();
                fronted.sort_by(|a, b| a.hostname.cmp(&b.hostname));
                out.extend(fronted.into_iter().map(|s| (s, parent.port)));
            }
            (group, kind) => notes.warn(format!("parentRefs[{i}]: {group}/{kind} parents are not supported")),
        }
    }
    out
}

/// A Gateway API backendRef as a backend, when it names a known Service.
fn http_backend(
    b: &routing::BackendRef,
    namespace: &str,
    hosts: &Hosts<'_>,
    at: &str,
    notes: &mut Notes<'_>,
) -> Option<proto::Backend> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !matches!(group, "" | "core") || kind != "Service" {
        notes.warn(format!(
            "{at}: {group}/{kind} backends are not supported; requests to it get 500"
        ));
        return None;
    }
    let ns = b.namespace.clone().unwrap_or_else(|| namespace.to_string());
    match hosts.by_name(&b.name, &ns) {
        Some(s) => Some(proto::Backend {
            service: s.key().to_string(),
            port: u32::from(b.port.unwrap_or(0)),
            weight: 1,
            ..Default::default()
        }),
        None => {
            notes.warn(format!(
                "{at}: service {ns}/{} does not exist; requests to it get 500",
                b.name
            ));
            None
        }
    }
}

/// A route under construction from one HTTPRoute rule.
#[derive(Default)]
struct Building {
    route: proto::Route,
    forward: proto::Forward,
    redirect: Option<proto::Redirect>,
}

/// One HTTPRoute rule's filters applied to a route under construction.
fn apply_filters(
    filters: &[HttpRouteFilter],
    building: &mut Building,
    namespace: &str,
    hosts: &Hosts<'_>,
    at: &str,
    notes: &mut Notes<'_>,
) {
    let Building { route, forward, redirect } = building;
    for (i, f) in filters.iter().enumerate() {
        let at = format!("{at}.filters[{i}]");
        notes.unknown(&format!("{at}."), &f.unknown);
        let path = |p: &routing::PathModifier, notes: &mut Notes<'_>| match p.kind.as_str() {
            "ReplaceFullPath" => p.replace_full_path.clone().map(|full| (Some(full), None)),
            "ReplacePrefixMatch" => {
                p.replace_prefix_match.clone().map(|prefix| (None, Some(prefix)))
            }
            other => {
                notes.warn(format!("{at}: path modifier {other:?} is not supported"));
                None
            }
        };
        match (f.kind.as_str(), f) {
            ("RequestHeaderModifier", HttpRouteFilter { request_header_modifier: Some(m), .. }) => {
                merge(&mut route.request_headers, edits(m));
            }
            (
                "ResponseHeaderModifier",
                HttpRouteFilter { response_header_modifier: Some(m), .. },
            ) => {
                merge(&mut route.response_headers, edits(m));
            }
            ("RequestRedirect", HttpRouteFilter { request_redirect: Some(r), .. }) => {
                let (full, prefix) =
                    r.path.as_ref().and_then(|p| path(p, notes)).unwrap_or((None, None));
                *redirect = Some(proto::Redirect {
                    scheme: r.scheme.clone().unwrap_or_default(),
                    host: r.hostname.clone().unwrap_or_default(),
                    port: u32::from(r.port.unwrap_or(0)),
                    path: full
                        .map(proto::redirect::Path::FullPath)
                        .or(prefix.map(proto::redirect::Path::Prefix)),
                    status: u32::from(r.status_code.unwrap_or(302)),
                });
            }
            ("URLRewrite", HttpRouteFilter { url_rewrite: Some(r), .. }) => {
                let (full, prefix) =
                    r.path.as_ref().and_then(|p| path(p, notes)).unwrap_or((None, None));
                forward.rewrite = Some(proto::Rewrite {
                    authority: r.hostname.clone().unwrap_or_default(),
                    path: full
                        .map(proto::rewrite::Path::FullPath)
                        .or(prefix.map(proto::rewrite::Path::Prefix)),
                });
            }
            ("RequestMirror", HttpRouteFilter { request_mirror: Some(m), .. }) => {
                let percent = match (&m.fraction, m.percent) {
                    (Some(f), _) => percent_of_fraction(f),
                    (None, Some(p)) => f64::from(p.min(100)),
                    (None, None) => 100.0,
                };
                if let Some(backend) = http_backend(
                    &m.backend_ref,
                    namespace,
                    hosts,
                    &format!("{at}.requestMirror"),
                    notes,
                ) {
                    route.mirrors.push(proto::Mirror { backend: Some(backend), percent });
                }
            }
            (kind, _) => notes.warn(format!("{at}: filter {kind:?} is not supported; ignored")),
        }
    }
}

/// Translates one HTTPRoute's rules into ranked routes per attached service.
fn translate_http_route(
    route: &Named<HttpRouteSpec>,
    state: &ClusterState,
    hosts: &Hosts<'_>,
    fronted_by: &dyn Fn(&Service, &str, &str) -> bool,
    out: &mut BTreeMap<String, Vec<Ranked>>,
    warnings: &mut Vec<Warning>,
) {
    let mut notes = Notes { object: reference("HTTPRoute", route), out: warnings };
    notes.unknown("spec.", &route.spec.unknown);
    let parents = http_route_parents(route, state, hosts, fronted_by, &mut notes);
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        notes.unknown(&format!("{at}."), &rule.unknown);
        let mut building = Building::default();
        apply_filters(&rule.filters, &mut building, &route.namespace, hosts, &at, &mut notes);
        let Building { route: mut base, mut forward, redirect } = building;
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let bat = format!("{at}.backendRefs[{bi}]");
            let weight = b.weight.unwrap_or(1);
            let Some(mut backend) =
                http_backend(&b.backend, &route.namespace, hosts, &bat, &mut notes)
            else {
                continue;
            };
            backend.weight = weight;
            let mut per_backend = Building::default();
            apply_filters(&b.filters, &mut per_backend, &route.namespace, hosts, &bat, &mut notes);
            backend.request_headers = per_backend.route.request_headers;
            backend.response_headers = per_backend.route.response_headers;
            forward.backends.push(backend);
        }
        if let Some(t) = &rule.timeouts {
            let mut read =
                |text: &Option<String>, name: &str| match text.as_deref().map(parse_duration) {
                    Some(Ok(d)) if !d.is_zero() => Some(duration(d)),
                    Some(Ok(_)) | None => None,
                    Some(Err(e)) => {
                        notes.warn(format!("{at}.timeouts.{name}: {e}; no timeout applied"));
                        None
                    }
                };
            forward.timeout = read(&t.request, "request");
            forward.attempt_timeout = read(&t.backend_request, "backendRequest");
        }
        forward.retry = Some(match &rule.retry {
            None => default_retry(),
            Some(r) => proto::Retry {
                attempts: r.attempts.unwrap_or(2),
                backoff: match r.backoff.as_deref().map(parse_duration) {
                    Some(Ok(d)) => Some(duration(d)),
                    Some(Err(e)) => {
                        notes.warn(format!("{at}.retry.backoff: {e}; 25ms used"));
                        None
                    }
                    None => None,
                },
                codes: r.codes.iter().map(|c| u32::from(*c)).collect(),
                on_connect_failure: true,
                on_reset: true,
                ..Default::default()
            },
        });
        base.action = Some(match redirect {
            Some(r) => proto::route::Action::Redirect(r),
            None => proto::route::Action::Forward(forward),
        });
        let default_match = [routing::HttpRouteMatch::default()];
        let matches = if rule.matches.is_empty() { &default_match[..] } else { &rule.matches[..] };
        for (mi, m) in matches.iter().enumerate() {
            let mat = format!("{at}.matches[{mi}]");
            notes.unknown(&format!("{mat}."), &m.unknown);
            let path = m.path.clone().unwrap_or_default();
            let value = path.value.clone().unwrap_or_else(|| "/".into());
            let (path_rank, path_match) = match path.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => (0, proto::string_match::Kind::Exact(value.clone())),
                "PathPrefix" => (1, proto::string_match::Kind::PathPrefix(value.clone())),
                "RegularExpression" => match check_regex(&value) {
                    Ok(()) => (2, proto::string_match::Kind::Regex(value.clone())),
                    Err(e) => {
                        notes.warn(format!(
                            "{mat}.path: bad regular expression: {e}; this match is skipped"
                        ));
                        continue;
                    }
                },
                other => {
                    notes.warn(format!(
                        "{mat}.path.type {other:?} is not supported; this match is skipped"
                    ));
                    continue;
                }
            };
            let key_matches = |list: &[routing::HttpKeyMatch],
                               what: &str,
                               notes: &mut Notes<'_>| {
                let mut out = Vec::new();
                for (k, h) in list.iter().enumerate() {
                    let kind = match h.kind.as_deref().unwrap_or("Exact") {
                        "Exact" => proto::string_match::Kind::Exact(h.value.clone()),
                        "RegularExpression" => match check_regex(&h.value) {
                            Ok(()) => proto::string_match::Kind::Regex(h.value.clone()),
                            Err(e) => {
                                notes.warn(format!(
                                    "{mat}.{what}[{k}]: bad regular expression: {e}"
                                ));
                                return None;
                            }
                        },
                        other => {
                            notes
                                .warn(format!("{mat}.{what}[{k}].type {other:?} is not supported"));
                            return None;
                        }
                    };
                    out.push(proto::KeyMatch {
                        name: h.name.clone(),
                        value: string_match(kind),
                        invert: false,
                    });
                }
                Some(out)
            };
            let (Some(headers), Some(query_params)) = (
                key_matches(&m.headers, "headers", &mut notes),
                key_matches(&m.query_params, "queryParams", &mut notes),
            ) else {
                continue;
            };
            for (service, port) in &parents {
                let mut r = base.clone();
                r.name =
                    format!("HTTPRoute {}/{} rule {ri} match {mi}", route.namespace, route.name);
                r.r#match = Some(proto::Match {
                    path: string_match(path_match.clone()),
                    headers: headers.clone(),
                    query_params: query_params.clone(),
                    method: m.method.clone().unwrap_or_default().to_ascii_uppercase(),
                    port: u32::from(port.unwrap_or(0)),
                });
                // A rule without backends answers 500 (Gateway API); one
                // whose backends all failed to resolve, too.
                out.entry(service.key().to_string()).or_default().push(Ranked {
                    rank: (
                        path_rank,
                        std::cmp::Reverse(if path_rank == 2 { 0 } else { value.len() }),
                        m.method.is_none(),
                        std::cmp::Reverse(m.headers.len()),
                        std::cmp::Reverse(m.query_params.len()),
                    ),
                    age: (route.created.clone(), route.namespace.clone(), route.name.clone()),
                    position: (ri, mi),
                    route: r,
                });
            }
        }
    }
}

fn istio_match(
    m: &IstioStringMatch,
    path: bool,
) -> Result<Option<proto::string_match::Kind>, String> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), None, None) => Ok(Some(proto::string_match::Kind::Exact(e.clone()))),
        (None, Some(p), None) => Ok(Some(if path && p == "/" {
            proto::string_match::Kind::PathPrefix("/".into())
        } else {
            proto::string_match::Kind::Prefix(p.clone())
        })),
        (None, None, Some(r)) => {
            check_regex(r).map(|()| Some(proto::string_match::Kind::Regex(r.clone())))
        }
        (None, None, None) => Ok(None),
        _ => Err("more than one of exact, prefix and regex".into()),
    }
}

fn header_operations(h: &routing::HeaderOperations) -> proto::HeaderEdits {
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| proto::Header { name: k.to_ascii_lowercase(), value: v.clone() })
            .collect()
    };
    proto::HeaderEdits { set: pairs(&h.set), add: pairs(&h.add), remove: h.remove.clone() }
}

/// `retryOn` as Istio reads it.
fn retry_on(text: &str, retry: &mut proto::Retry, notes: &mut Notes<'_>, at: &str) {
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token {
            "5xx" => retry.on_5xx = true,
            "gateway-error" => retry.on_gateway_error = true,
            "connect-failure" => retry.on_connect_failure = true,
            "reset" | "refused-stream" | "cancelled" | "unavailable" | "reset-before-request" => {
                retry.on_reset = true
            }
            "retriable-4xx" => retry.codes.push(409),
            "retriable-status-codes" | "deadline-exceeded" | "resource-exhausted" | "internal" => {}
            code if code.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)) => {
                retry.codes.push(code.parse().unwrap_or(503));
            }
            other => notes.warn(format!("{at}.retryOn: {other:?} is not supported; ignored")),
        }
    }
}

/// One VirtualService's http routes, for each service its hosts name.
fn translate_virtual_service(
    vs: &Named<VirtualServiceSpec>,
    hosts: &Hosts<'_>,
    out: &mut BTreeMap<String, Vec<proto::Route>>,
    warnings: &mut Vec<Warning>,
) {
    let mut notes = Notes { object: reference("VirtualService", vs), out: warnings };
    if !vs.spec.gateways.is_empty() && !vs.spec.gateways.iter().any(|g| g == "mesh") {
        // Bound to ingress gateways only: not the mesh's business.
        return;
    }
    notes.unknown("spec.", &vs.spec.unknown);
    if !vs.spec.tcp.is_empty() || !vs.spec.tls.is_empty() {
        notes.warn("tcp and tls routes are not applied by waypoints; ignored");
    }
    let mut targets: Vec<&Service> = Vec::new();
    for host in &vs.spec.hosts {
        let found = hosts.resolve(host, &vs.namespace);
        if found.is_empty() {
            notes.warn(format!("host {host:?} names no service in the mesh"));
        }
        targets.extend(found.into_iter().filter(|s| s.waypoint.is_some()));
    }
    targets.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    targets.dedup_by(|a, b| a.hostname == b.hostname);
    let mut routes = Vec::new();
    for (hi, http) in vs.spec.http.iter().enumerate() {
        let at = format!("spec.http[{hi}]");
        notes.unknown(&format!("{at}."), &http.unknown);
        let mut base = proto::Route::default();
        if let Some(h) = &http.headers {
            base.request_headers = h.request.as_ref().map(header_operations);
            base.response_headers = h.response.as_ref().map(header_operations);
        }
        if let Some(fault) = &http.fault {
            let mut f = proto::Fault::default();
            if let Some(d) = &fault.delay {
                let percent = d
                    .percentage
                    .as_ref()
                    .map_or_else(|| f64::from(d.percent.unwrap_or(100).min(100)), |p| p.value);
                match d.fixed_delay.as_deref().map(parse_duration) {
                    Some(Ok(delay)) => {
                        f.delay = Some(proto::Delay {
                            delay: Some(duration(delay)),
                            percent: percent.clamp(0.0, 100.0),
                        })
                    }
                    Some(Err(e)) => {
                        notes.warn(format!("{at}.fault.delay.fixedDelay: {e}; no delay injected"))
                    }
                    None => notes.warn(format!("{at}.fault.delay: only fixedDelay is supported")),
                }
            }
            if let Some(a) = &fault.abort {
                let percent = a.percentage.as_ref().map_or(100.0, |p| p.value).clamp(0.0, 100.0);
                match a.http_status {
                    Some(status) if (200..=599).contains(&status) => {
                        f.abort = Some(proto::Abort { status: u32::from(status), percent });
                    }
                    _ => notes
                        .warn(format!("{at}.fault.abort: only httpStatus (200-599) is supported")),
                }
            }
            base.fault = Some(f);
        }
        let destination = |d: &routing::Destination,
                           notes: &mut Notes<'_>,
                           what: &str|
         -> Option<proto::Backend> {
            let found = hosts.resolve(&d.host, &vs.namespace);
            let Some(service) = found.first() else {
                notes.warn(format!(
                    "{what}: host {:?} names no service in the mesh; requests to it get 500",
                    d.host
                ));
                return None;
            };
            Some(proto::Backend {
                service: service.key().to_string(),
                port: u32::from(d.port.as_ref().map_or(0, |p| p.number)),
                subset: d.subset.clone().unwrap_or_default(),
                weight: 1,
                ..Default::default()
            })
        };
        let mirror_percent =
            http.mirror_percentage.as_ref().map_or(100.0, |p| p.value).clamp(0.0, 100.0);
        if let Some(m) = &http.mirror
            && let Some(backend) = destination(m, &mut notes, &format!("{at}.mirror"))
        {
            base.mirrors.push(proto::Mirror { backend: Some(backend), percent: mirror_percent });
        }
        for (mi, m) in http.mirrors.iter().enumerate() {
            if let Some(backend) =
                destination(&m.destination, &mut notes, &format!("{at}.mirrors[{mi}]"))
            {
                let percent = m.percentage.as_ref().map_or(100.0, |p| p.value).clamp(0.0, 100.0);
                base.mirrors.push(proto::Mirror { backend: Some(backend), percent });
            }
        }
        let default_match = [routing::HttpMatchRequest::default()];
        let matches = if http.matches.is_empty() { &default_match[..] } else { &http.matches[..] };
        for (mi, m) in matches.iter().enumerate() {
            let mat = format!("{at}.match[{mi}]");
            notes.unknown(&format!("{mat}."), &m.unknown);
            if !m.source_labels.is_empty() {
                notes.warn(format!(
                    "{mat}.sourceLabels selects clients, which a waypoint cannot see; this match is skipped in the waypoint (sidecars apply it)"
                ));
                continue;
            }
            if !m.gateways.is_empty() && !m.gateways.iter().any(|g| g == "mesh") {
                continue;
            }
            if m.authority.is_some() || m.ignore_uri_case == Some(true) {
                notes.warn(format!(
                    "{mat}: authority and ignoreUriCase are not supported; this match is skipped"
                ));
                continue;
            }
            let mut ok = true;
            let mut read =
                |s: &IstioStringMatch, path: bool, what: String, notes: &mut Notes<'_>| {
                    match istio_match(s, path) {
                        Ok(k) => k,
                        Err(e) => {
                            notes.warn(format!("{what}: {e}; this match is skipped"));
                            ok = false;
                            None
                        }
                    }
                };
            let path = m.uri.as_ref().and_then(|u| read(u, true, format!("{mat}.uri"), &mut notes));
            let method = match &m.method {
                Some(IstioStringMatch { exact: Some(e), prefix: None, regex: None }) => {
                    e.to_ascii_uppercase()
                }
                Some(_) => {
                    notes.warn(format!(
                        "{mat}.method: only exact is supported; this match is skipped"
                    ));
                    continue;
                }
                None => String::new(),
            };
            let mut headers = Vec::new();
            for (name, v) in &m.headers {
                let value = read(v, false, format!("{mat}.headers.{name}"), &mut notes);
                headers.push(proto::KeyMatch {
                    name: name.to_ascii_lowercase(),
                    value: value.and_then(string_match),
                    invert: false,
                });
            }
            for (name, v) in &m.without_headers {
                let value = read(v, false, format!("{mat}.withoutHeaders.{name}"), &mut notes);
                headers.push(proto::KeyMatch {
                    name: name.to_ascii_lowercase(),
                    value: value.and_then(string_match),
                    invert: true,
                });
            }
            let mut query_params = Vec::new();
            for (name, v) in &m.query_params {
                let value = read(v, false, format!("{mat}.queryParams.{name}"), &mut notes);
                query_params.push(proto::KeyMatch {
                    name: name.clone(),
                    value: value.and_then(string_match),
                    invert: false,
                });
            }
            if !ok {
                continue;
            }
            let prefix_matched = matches!(
                path,
                Some(
                    proto::string_match::Kind::Prefix(_) | proto::string_match::Kind::PathPrefix(_)
                )
            );
            let mut r = base.clone();
            r.name = format!(
                "VirtualService {}/{} http {hi}{}",
                vs.namespace,
                vs.name,
                http.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            r.r#match = Some(proto::Match {
                path: path.and_then(string_match),
                headers,
                query_params,
                method,
                port: u32::from(m.port.unwrap_or(0)),
            });
            r.action = Some(if let Some(d) = &http.direct_response {
                if d.body.as_ref().is_some_and(|b| b.bytes.is_some()) {
                    notes.warn(format!(
                        "{at}.directResponse.body.bytes is not supported; the body is empty"
                    ));
                }
                proto::route::Action::DirectResponse(proto::DirectResponse {
                    status: u32::from(d.status),
                    body: d.body.as_ref().and_then(|b| b.string.clone()).unwrap_or_default(),
                })
            } else if let Some(rd) = &http.redirect {
                notes.unknown(&format!("{at}.redirect."), &rd.unknown);
                proto::route::Action::Redirect(proto::Redirect {
                    scheme: rd.scheme.clone().unwrap_or_default(),
                    host: rd.authority.clone().unwrap_or_default(),
                    port: u32::from(rd.port.unwrap_or(0)),
                    path: rd.uri.clone().map(proto::redirect::Path::FullPath),
                    status: u32::from(rd.redirect_code.unwrap_or(301)),
                })
            } else {
                let mut forward = proto::Forward::default();
                let weights_given = http.route.iter().any(|d| d.weight.is_some());
                for (di, d) in http.route.iter().enumerate() {
                    let Some(mut backend) =
                        destination(&d.destination, &mut notes, &format!("{at}.route[{di}]"))
                    else {
                        continue;
                    };
                    // Weights left out everywhere: an even split.
                    backend.weight = if weights_given { d.weight.unwrap_or(0) } else { 1 };
                    if let Some(h) = &d.headers {
                        backend.request_headers = h.request.as_ref().map(header_operations);
                        backend.response_headers = h.response.as_ref().map(header_operations);
                    }
                    forward.backends.push(backend);
                }
                if let Some(rw) = &http.rewrite {
                    notes.unknown(&format!("{at}.rewrite."), &rw.unknown);
                    forward.rewrite = Some(proto::Rewrite {
                        authority: rw.authority.clone().unwrap_or_default(),
                        path: rw.uri.clone().map(|u| {
                            if prefix_matched {
                                proto::rewrite::Path::Prefix(u)
                            } else {
                                proto::rewrite::Path::FullPath(u)
                            }
                        }),
                    });
                }
                match http.timeout.as_deref().map(parse_duration) {
                    Some(Ok(t)) if !t.is_zero() => forward.timeout = Some(duration(t)),
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) => notes.warn(format!("{at}.timeout: {e}; no timeout applied")),
                }
                forward.retry = Some(match &http.retries {
                    None => default_retry(),
                    Some(r) => {
                        notes.unknown(&format!("{at}.retries."), &r.unknown);
                        let mut retry = proto::Retry {
                            attempts: r.attempts.unwrap_or(2),
                            backoff: Some(duration(Duration::from_millis(25))),
                            ..Default::default()
                        };
                        match &r.retry_on {
                            Some(text) => {
                                retry_on(text, &mut retry, &mut notes, &format!("{at}.retries"))
                            }
                            // Istio's default conditions.
                            None => {
                                retry.on_connect_failure = true;
                                retry.on_reset = true;
                            }
                        }
                        match r.per_try_timeout.as_deref().map(parse_duration) {
                            Some(Ok(t)) if !t.is_zero() => {
                                forward.attempt_timeout = Some(duration(t))
                            }
                            Some(Ok(_)) | None => {}
                            Some(Err(e)) => {
                                notes.warn(format!("{at}.retries.perTryTimeout: {e}; ignored"))
                            }
                        }
                        retry
                    }
                });
                proto::route::Action::Forward(forward)
            });
            routes.push(r);
        }
    }
    for service in targets {
        out.entry(service.key().to_string()).or_default().extend(routes.iter().cloned());
    }
}

/// A DestinationRule's traffic policy.
fn traffic_policy(
    p: &routing::TrafficPolicy,
    at: &str,
    notes: &mut Notes<'_>,
) -> proto::TrafficPolicy {
    use proto::load_balancer::Kind;
    notes.unknown(&format!("{at}."), &p.unknown);
    let mut out = proto::TrafficPolicy::default();
    if let Some(lb) = &p.load_balancer {
        notes.unknown(&format!("{at}.loadBalancer."), &lb.unknown);
        let (kind, key) = match (&lb.simple, &lb.consistent_hash) {
            (_, Some(h)) => {
                notes.unknown(&format!("{at}.loadBalancer.consistentHash."), &h.unknown);
                match (&h.http_header_name, &h.http_cookie, h.use_source_ip) {
                    (Some(name), _, _) => (Kind::HashHeader, name.to_ascii_lowercase()),
                    (None, Some(c), _) => (Kind::HashCookie, c.name.clone()),
                    (None, None, Some(true)) => (Kind::HashSourceIp, String::new()),
                    _ => {
                        notes.warn(format!("{at}.loadBalancer.consistentHash: only httpHeaderName, httpCookie and useSourceIp are supported"));
                        (Kind::LeastRequest, String::new())
                    }
                }
            }
            (Some(simple), None) => {
                match simple.as_str() {
                    "ROUND_ROBIN" => (Kind::RoundRobin, String::new()),
                    "RANDOM" => (Kind::Random, String::new()),
                    "LEAST_REQUEST" | "LEAST_CONN" | "UNSPECIFIED" => {
                        (Kind::LeastRequest, String::new())
                    }
                    other => {
                        notes.warn(format!("{at}.loadBalancer.simple {other:?} is not supported; LEAST_REQUEST used"));
                        (Kind::LeastRequest, String::new())
                    }
                }
            }
            (None, None) => (Kind::LeastRequest, String::new()),
        };
        out.load_balancer = Some(proto::LoadBalancer { kind: kind as i32, hash_key: key });
    }
    if let Some(pool) = &p.connection_pool {
        if pool.tcp.is_some() {
            notes.warn(format!("{at}.connectionPool.tcp is not applied by waypoints; ignored"));
        }
        if let Some(http) = &pool.http {
            notes.unknown(&format!("{at}.connectionPool.http."), &http.unknown);
            out.connection_pool = Some(proto::ConnectionPool {
                max_requests: http.http2_max_requests.unwrap_or(0),
                max_pending: http.http1_max_pending_requests.unwrap_or(0),
                max_requests_per_connection: http.max_requests_per_connection.unwrap_or(0),
            });
        }
    }
    if let Some(o) = &p.outlier_detection {
        notes.unknown(&format!("{at}.outlierDetection."), &o.unknown);
        let base = match o.base_ejection_time.as_deref().map(parse_duration) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                notes.warn(format!("{at}.outlierDetection.baseEjectionTime: {e}; 30s used"));
                Duration::from_secs(30)
            }
            None => Duration::from_secs(30),
        };
        let consecutive = o.consecutive_5xx_errors.or(o.consecutive_gateway_errors).unwrap_or(5);
        out.outlier_detection = Some(proto::OutlierDetection {
            consecutive_5xx: consecutive,
            base_ejection_time: Some(duration(base)),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
        });
    }
    out
}

/// Pods' labels by workload uid, for subsets.
fn pod_labels<'a>(
    state: &'a ClusterState,
    mesh: &MeshConfig,
    uid: &str,
) -> Option<&'a BTreeMap<String, String>> {
    let rest = uid.strip_prefix(&format!("{}//Pod/", mesh.cluster_id))?;
    let (ns, name) = rest.split_once('/')?;
    state.pods.get(&(ns.to_string(), name.to_string()))?.metadata.labels.as_ref()
}

/// Computes every service's routes.
pub fn translate(
    state: &ClusterState,
    mesh: &MeshConfig,
    services: &[Service],
    workloads: &[Workload],
    warnings: &mut Vec<Warning>,
) -> Routes {
    let hosts = Hosts::new(services, mesh);
    let fronted_by = |s: &Service, namespace: &str, name: &str| match s
        .waypoint
        .as_ref()
        .map(|w| &w.destination)
    {
        Some(GatewayDestination::Hostname(h)) => {
            h.namespace == namespace && h.hostname.split('.').next() == Some(name)
        }
        _ => false,
    };

    // HTTPRoutes, ranked per service.
    let mut ranked: BTreeMap<String, Vec<Ranked>> = BTreeMap::new();
    for route in state.http_routes.values() {
        translate_http_route(route, state, &hosts, &fronted_by, &mut ranked, warnings);
    }
    // VirtualServices, oldest first, each keeping its order.
    let mut virtual_services: Vec<&Named<VirtualServiceSpec>> =
        state.virtual_services.values().collect();
    virtual_services.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let mut vs_routes: BTreeMap<String, Vec<proto::Route>> = BTreeMap::new();
    for vs in virtual_services {
        let before = vs_routes.clone();
        translate_virtual_service(vs, &hosts, &mut vs_routes, warnings);
        for (service, routes) in &vs_routes {
            let added = routes.len() > before.get(service).map_or(0, Vec::len);
            if added && ranked.contains_key(service) {
                warnings.push(Warning {
                    object: reference("VirtualService", vs),
                    message: format!("service {service} is routed by an HTTPRoute, which takes precedence; ignored for it"),
                });
            }
        }
    }

    // DestinationRules: the oldest for a host wins.
    let mut rules: Vec<&Named<DestinationRuleSpec>> = state.destination_rules.values().collect();
    rules.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let mut policies: BTreeMap<String, (proto::TrafficPolicy, Vec<proto::Subset>)> =
        BTreeMap::new();
    for dr in rules {
        let mut notes = Notes { object: reference("DestinationRule", dr), out: warnings };
        notes.unknown("spec.", &dr.spec.unknown);
        let found = hosts.resolve(&dr.spec.host, &dr.namespace);
        if found.is_empty() {
            notes.warn(format!("host {:?} names no service in the mesh", dr.spec.host));
        }
        for service in found {
            let key = service.key().to_string();
            if policies.contains_key(&key) {
                notes.warn(format!(
                    "service {key} already has an older DestinationRule; this one is ignored for it"
                ));
                continue;
            }
            let policy = dr
                .spec
                .traffic_policy
                .as_ref()
                .map(|p| traffic_policy(p, "spec.trafficPolicy", &mut notes))
                .unwrap_or_default();
            let subsets = dr
                .spec
                .subsets
                .iter()
                .enumerate()
                .map(|(i, s)| proto::Subset {
                    name: s.name.clone(),
                    workloads: workloads
                        .iter()
                        .filter(|w| w.services.contains_key(&service.key()))
                        .filter(|w| {
                            let labels = pod_labels(state, mesh, &w.uid);
                            s.labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                        })
                        .map(|w| w.uid.clone())
                        .collect(),
                    traffic_policy: s.traffic_policy.as_ref().map(|p| {
                        traffic_policy(p, &format!("spec.subsets[{i}].trafficPolicy"), &mut notes)
                    }),
                })
                .collect();
            policies.insert(key, (policy, subsets));
        }
    }

    let mut out = Routes::default();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for service in services.iter().filter(|s| s.waypoint.is_some()) {
        let key = service.key().to_string();
        let routes = match (ranked.remove(&key), vs_routes.remove(&key)) {
            (Some(mut r), _) => {
                r.sort_by(|a, b| (a.rank, &a.age, a.position).cmp(&(b.rank, &b.age, b.position)));
                r.into_iter().map(|r| r.route).collect()
            }
            (None, Some(v)) => v,
            // No user routes: the service itself, with Istio's default retries.
            (None, None) => vec![proto::Route {
                name: "default".into(),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![proto::Backend {
                        service: key.clone(),
                        weight: 1,
                        ..Default::default()
                    }],
                    retry: Some(default_retry()),
                    ..Default::default()
                })),
                ..Default::default()
            }],
        };
        let mut backends: BTreeSet<String> = BTreeSet::new();
        for r in &routes {
            if let Some(proto::route::Action::Forward(f)) = &r.action {
                backends.extend(f.backends.iter().map(|b| b.service.clone()));
            }
            backends.extend(
                r.mirrors.iter().filter_map(|m| m.backend.as_ref()).map(|b| b.service.clone()),
            );
        }
        backends.remove(&key);
        wanted.extend(backends.iter().cloned());
        if !backends.is_empty() {
            out.backends.insert(key.clone(), backends);
        }
        let (policy, subsets) = policies.get(&key).cloned().unwrap_or_default();
        out.by_service.insert(
            key,
            proto::ServiceRoutes {
                namespace: service.namespace.clone(),
                hostname: service.hostname.clone(),
                ports: port_protocols(state, service),
                routes,
                subsets,
                traffic_policy: Some(policy),
            },
        );
    }
    // Services that are only backends: their ports, subsets and policy.
    for service in services {
        let key = service.key().to_string();
        if out.by_service.contains_key(&key) || !wanted.contains(&key) {
            continue;
        }
        let (policy, subsets) = policies.get(&key).cloned().unwrap_or_default();
        out.by_service.insert(
            key,
            proto::ServiceRoutes {
                namespace: service.namespace.clone(),
                hostname: service.hostname.clone(),
                ports: port_protocols(state, service),
                routes: Vec::new(),
                subsets,
                traffic_policy: Some(policy),
            },
        );
    }
    out
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
