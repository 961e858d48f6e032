//! The routes of one service as the engine uses them, read from
//! `mesh.l7.ServiceRoutes` and checked on the way in: a regular expression
//! that does not compile, a weightless backend list, a status code out of
//! range or a header name HTTP refuses is an error naming the field, and
//! the xDS client then keeps the resource's last good version.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mesh_proto::l7 as proto;
use regex::Regex;

/// A field that could not be read, named by its path in the resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// e.g. `routes[2].match.path.regex`.
    pub field: String,
    /// What was wrong.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// How a service port's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Detected per connection.
    Undeclared,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// HTTP/2 only.
    Http2,
    /// Opaque bytes.
    Tcp,
}

/// Everything the engine needs to route HTTP for one service.
#[derive(Debug, Clone)]
pub struct ServiceRoutes {
    /// `namespace/hostname`, the service's resource name.
    pub key: String,
    /// The service's hostname.
    pub hostname: String,
    /// Port → protocol.
    pub ports: Vec<(u16, Protocol)>,
    /// In precedence order.
    pub routes: Vec<Route>,
    /// Named subsets.
    pub subsets: Vec<Subset>,
    /// Balancing and limits.
    pub traffic_policy: TrafficPolicy,
}

impl ServiceRoutes {
    /// The protocol of `port` (undeclared when the port is not listed).
    pub fn protocol(&self, port: u16) -> Protocol {
        self.ports.iter().find(|(p, _)| *p == port).map_or(Protocol::Undeclared, |(_, p)| *p)
    }

    /// A subset by name.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

/// One route: a match and what to do with what it matches.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where it came from, for logs.
    pub name: String,
    /// `None`: every request.
    pub matcher: Option<Match>,
    /// What happens to a matched request.
    pub action: Action,
    /// Request header edits.
    pub request_headers: HeaderEdits,
    /// Response header edits.
    pub response_headers: HeaderEdits,
    /// Injected faults.
    pub fault: Fault,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Sends the request on.
    Forward(Forward),
    /// Answers with a redirect.
    Redirect(Redirect),
    /// Answers with this status and body.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body.
        body: String,
    },
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// The path (without the query).
    pub path: Option<StringMatch>,
    /// Headers.
    pub headers: Vec<KeyMatch>,
    /// Query parameters.
    pub query_params: Vec<KeyMatch>,
    /// The method.
    pub method: Option<Method>,
    /// The service port.
    pub port: Option<u16>,
}

/// How a string is compared.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// A prefix of whole path segments.
    PathPrefix(String),
    /// Matches the whole string.
    Regex(Regex),
}

/// A header or query parameter condition.
#[derive(Debug, Clone)]
pub struct KeyMatch {
    /// The name (lower case for headers).
    pub name: String,
    /// `None`: present with any value.
    pub value: Option<StringMatch>,
    /// The condition must not hold.
    pub invert: bool,
}

/// Sending a request on.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    /// Chosen by weight.
    pub backends: Vec<Backend>,
    /// Path and authority rewrite.
    pub rewrite: Rewrite,
    /// The whole request, retries included.
    pub timeout: Option<Duration>,
    /// Each attempt.
    pub attempt_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
}

/// A weighted destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// The service's resource name.
    pub service: String,
    /// `None`: the port the request was sent to.
    pub port: Option<u16>,
    /// A subset name.
    pub subset: Option<String>,
    /// Relative weight.
    pub weight: u32,
    /// Per-backend request edits.
    pub request_headers: HeaderEdits,
    /// Per-backend response edits.
    pub response_headers: HeaderEdits,
}

/// A rewrite before forwarding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    /// New authority.
    pub authority: Option<String>,
    /// New path.
    pub path: Option<PathRewrite>,
}

/// How a path is rewritten.
#[derive(Debug, Clone, PartialEq)]
pub enum PathRewrite {
    /// The whole path.
    Full(String),
    /// The part the route's prefix matched.
    Prefix(String),
}

/// A redirect answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<PathRewrite>,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}

/// Header edits, applied set, then add, then remove (Gateway API's order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdits {
    /// Replace.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Retry policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// First pause.
    pub backoff: Duration,
    /// Codes.
    pub codes: Vec<u16>,
    /// Any 5xx.
    pub on_5xx: bool,
    /// 502, 503, 504.
    pub on_gateway_error: bool,
    /// No connection.
    pub on_connect_failure: bool,
    /// Reset before an answer.
    pub on_reset: bool,
}

impl Retry {
    /// Whether an answer with `status` is retried.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.codes.contains(&code)
            || (self.on_5xx && status.is_server_error())
            || (self.on_gateway_error && matches!(code, 502..=504))
    }
}

/// Injected faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// Delay and its share of requests (0–100).
    pub delay: Option<(Duration, f64)>,
    /// Abort status and its share of requests (0–100).
    pub abort: Option<(StatusCode, f64)>,
}

/// A mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// Where copies go.
    pub backend: Backend,
    /// Share of requests, 0–100.
    pub percent: f64,
}

/// A named subset, resolved to workloads.
#[derive(Debug, Clone)]
pub struct Subset {
    /// Name.
    pub name: String,
    /// Workload uids.
    pub workloads: Vec<String>,
    /// Its own policy, when it has one.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Balancing and limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficPolicy {
    /// How an endpoint is chosen.
    pub load_balancer: LoadBalancer,
    /// Requests in flight; 0: no limit.
    pub max_requests: u32,
    /// Requests waiting; 0: no limit.
    pub max_pending: u32,
    /// Requests per connection; 0: no limit.
    pub max_requests_per_connection: u32,
    /// Ejection after consecutive failures.
    pub outlier: Option<Outlier>,
}

/// How an endpoint is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// The fewer requests in flight, the likelier (power of two choices).
    #[default]
    LeastRequest,
    /// In turn.
    RoundRobin,
    /// At random.
    Random,
    /// By a header's value.
    HashHeader(HeaderName),
    /// By a cookie's value.
    HashCookie(String),
    /// By the client's address.
    HashSourceIp,
}

/// Consecutive-5xx ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    /// Failures in a row that eject.
    pub consecutive_5xx: u32,
    /// First ejection's length.
    pub base_ejection: Duration,
    /// Share of endpoints that may be out at once.
    pub max_ejection_percent: u32,
}

fn duration(
    d: &Option<prost_types_duration::Duration>,
    field: &str,
) -> Result<Option<Duration>, ConfigError> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(err(field, format!("not a duration: {}s {}ns", d.seconds, d.nanos)));
    }
    Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32)))
}

/// The well-known Duration, under a name that says where it comes from.
mod prost_types_duration {
    pub(super) use mesh_proto::prost_types::Duration;
}

fn percent(p: f64, field: &str) -> Result<f64, ConfigError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(err(field, format!("{p} is not a percentage")));
    }
    Ok(p)
}

fn status(code: u32, field: &str) -> Result<StatusCode, ConfigError> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| err(field, format!("{code} is not an HTTP status this proxy answers with")))
}

fn port(p: u32, field: &str) -> Result<Option<u16>, ConfigError> {
    match p {
        0 => Ok(None),
        p => u16::try_from(p).map(Some).map_err(|_| err(field, format!("{p} is not a port"))),
    }
}

fn string_match(m: &proto::StringMatch, field: &str) -> Result<StringMatch, ConfigError> {
    use proto::string_match::Kind;
    Ok(match &m.kind {
        Some(Kind::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(Kind::Prefix(s)) => StringMatch::Prefix(s.clone()),
        Some(Kind::PathPrefix(s)) => StringMatch::PathPrefix(s.trim_end_matches('/').to_string()),
        Some(Kind::Regex(r)) => {
            // Anchored: Envoy's safe_regex matches the whole string.
            let anchored = format!("^(?:{r})$");
            StringMatch::Regex(
                regex::RegexBuilder::new(&anchored)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| err(format!("{field}.regex"), e.to_string()))?,
            )
        }
        None => return Err(err(field, "no kind of match set")),
    })
}

fn key_match(m: &proto::KeyMatch, field: &str, header: bool) -> Result<KeyMatch, ConfigError> {
    let name = if header {
        HeaderName::from_bytes(m.name.as_bytes())
            .map_err(|_| {
                err(format!("{field}.name"), format!("{:?} is not a header name", m.name))
            })?
            .as_str()
            .to_string()
    } else if m.name.is_empty() {
        return Err(err(format!("{field}.name"), "empty"));
    } else {
        m.name.clone()
    };
    let value = m.value.as_ref().map(|v| string_match(v, &format!("{field}.value"))).transpose()?;
    Ok(KeyMatch { name, value, invert: m.invert })
}

fn header_edits(e: Option<&proto::HeaderEdits>, field: &str) -> Result<HeaderEdits, ConfigError> {
    let Some(e) = e else { return Ok(HeaderEdits::default()) };
    let pair = |h: &proto::Header, f: String| {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| err(&f, format!("{:?} is not a header name", h.name)))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| err(&f, format!("{:?} is not a header value", h.value)))?;
        Ok::<_, ConfigError>((name, value))
    };
    Ok(HeaderEdits {
        set: e
            .set
            .iter()
            .enumerate()
            .map(|(i, h)| pair(h, format!("{field}.set[{i}]")))
            .collect::<Result<_, _>>()?,
        add: e
            .add
            .iter()
            .enumerate()
            .map(|(i, h)| pair(h, format!("{field}.add[{i}]")))
            .collect::<Result<_, _>>()?,
        remove: e
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    err(format!("{field}.remove[{i}]"), format!("{n:?} is not a header name"))
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

fn backend(b: &proto::Backend, field: &str) -> Result<Backend, ConfigError> {
    if b.service.is_empty() {
        return Err(err(format!("{field}.service"), "empty"));
    }
    Ok(Backend {
        service: b.service.clone(),
        port: port(b.port, &format!("{field}.port"))?,
        subset: Some(b.subset.clone()).filter(|s| !s.is_empty()),
        weight: b.weight,
        request_headers: header_edits(
            b.request_headers.as_ref(),
            &format!("{field}.request_headers"),
        )?,
        response_headers: header_edits(
            b.response_headers.as_ref(),
            &format!("{field}.response_headers"),
        )?,
    })
}

fn path_rewrite(
    full: Option<&String>,
    prefix: Option<&String>,
    field: &str,
) -> Result<Option<PathRewrite>, ConfigError> {
    let check = |p: &String, f: &str| {
        if p.starts_with('/') && !p.contains(['?', '#']) && !p.chars().any(char::is_control) {
            Ok(())
        } else {
            Err(err(format!("{field}.{f}"), format!("{p:?} is not a path")))
        }
    };
    match (full, prefix) {
        (Some(p), _) => check(p, "full_path").map(|()| Some(PathRewrite::Full(p.clone()))),
        (None, Some(p)) if p.is_empty() => Ok(Some(PathRewrite::Prefix(String::new()))),
        (None, Some(p)) => check(p, "prefix").map(|()| Some(PathRewrite::Prefix(p.clone()))),
        (None, None) => Ok(None),
    }
}

fn retry(r: &proto::Retry, field: &str) -> Result<Retry, ConfigError> {
    Ok(Retry {
        attempts: r.attempts.min(16),
        backoff: duration(&r.backoff, &format!("{field}.backoff"))?
            .unwrap_or(Duration::from_millis(25)),
        codes: r
            .codes
            .iter()
            .map(|c| status(*c, &format!("{field}.codes")).map(|s| s.as_u16()))
            .collect::<Result<_, _>>()?,
        on_5xx: r.on_5xx,
        on_gateway_error: r.on_gateway_error,
        on_connect_failure: r.on_connect_failure,
        on_reset: r.on_reset,
    })
}

fn forward(f: &proto::Forward, field: &str) -> Result<Forward, ConfigError> {
    let backends = f
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend(b, &format!("{field}.backends[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        return Err(err(format!("{field}.backends"), "every weight is 0"));
    }
    let rewrite = match &f.rewrite {
        None => Rewrite::default(),
        Some(r) => {
            use proto::rewrite::Path;
            let (full, prefix) = match &r.path {
                Some(Path::FullPath(p)) => (Some(p), None),
                Some(Path::Prefix(p)) => (None, Some(p)),
                None => (None, None),
            };
            if !r.authority.is_empty() && HeaderValue::from_str(&r.authority).is_err() {
                return Err(err(format!("{field}.rewrite.authority"), "not a header value"));
            }
            Rewrite {
                authority: Some(r.authority.clone()).filter(|a| !a.is_empty()),
                path: path_rewrite(full, prefix, &format!("{field}.rewrite"))?,
            }
        }
    };
    Ok(Forward {
        backends,
        rewrite,
        timeout: duration(&f.timeout, &format!("{field}.timeout"))?.filter(|d| !d.is_zero()),
        attempt_timeout: duration(&f.attempt_timeout, &format!("{field}.attempt_timeout"))?
            .filter(|d| !d.is_zero()),
        retry: f.retry.as_ref().map(|r| retry(r, &format!("{field}.retry"))).transpose()?,
    })
}

fn route(r: &proto::Route, field: &str) -> Result<Route, ConfigError> {
    use proto::route::Action as A;
    let matcher = match &r.r#match {
        None => None,
        Some(m) => {
            let f = format!("{field}.match");
            Some(Match {
                path: m.path.as_ref().map(|p| string_match(p, &format!("{f}.path"))).transpose()?,
                headers: m
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| key_match(h, &format!("{f}.headers[{i}]"), true))
                    .collect::<Result<_, _>>()?,
                query_params: m
                    .query_params
                    .iter()
                    .enumerate()
                    .map(|(i, q)| key_match(q, &format!("{f}.query_params[{i}]"), false))
                    .collect::<Result<_, _>>()?,
                method: match m.method.as_str() {
                    "" => None,
                    name => Some(Method::from_bytes(name.as_bytes()).map_err(|_| {
                        err(format!("{f}.method"), format!("{name:?} is not a method"))
                    })?),
                },
                port: port(m.port, &format!("{f}.port"))?,
            })
        }
    };
    let action = match &r.action {
        Some(A::Forward(f)) => Action::Forward(forward(f, &format!("{field}.forward"))?),
        Some(A::Redirect(rd)) => {
            use proto::redirect::Path;
            let f = format!("{field}.redirect");
            let (full, prefix) = match &rd.path {
                Some(Path::FullPath(p)) => (Some(p), None),
                Some(Path::Prefix(p)) => (None, Some(p)),
                None => (None, None),
            };
            let code = match rd.status {
                0 => StatusCode::FOUND,
                c @ (301 | 302 | 303 | 307 | 308) => status(c, &format!("{f}.status"))?,
                c => {
                    return Err(err(
                        format!("{f}.status"),
                        format!("{c} is not a redirect status"),
                    ));
                }
            };
            let text = |s: &String, name: &str| {
                if s.is_empty() {
                    Ok(None)
                } else if s.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]+".contains(c)) {
                    Ok(Some(s.clone()))
                } else {
                    Err(err(format!("{f}.{name}"), format!("{s:?} is not allowed")))
                }
            };
            Action::Redirect(Redirect {
                scheme: text(&rd.scheme, "scheme")?,
                host: text(&rd.host, "host")?,
                port: port(rd.port, &format!("{f}.port"))?,
                path: path_rewrite(full, prefix, &f)?,
                status: code,
            })
        }
        Some(A::DirectResponse(d)) => Action::Direct {
            status: status(d.status, &format!("{field}.direct_response.status"))?,
            body: d.body.clone(),
        },
        None => return Err(err(field, "no action")),
    };
    let fault = match &r.fault {
        None => Fault::default(),
        Some(fl) => Fault {
            delay: match &fl.delay {
                None => None,
                Some(d) => duration(&d.delay, &format!("{field}.fault.delay.delay"))?
                    .map(|t| {
                        Ok::<_, ConfigError>((
                            t,
                            percent(d.percent, &format!("{field}.fault.delay.percent"))?,
                        ))
                    })
                    .transpose()?,
            },
            abort: fl
                .abort
                .as_ref()
                .map(|a| {
                    Ok::<_, ConfigError>((
                        status(a.status, &format!("{field}.fault.abort.status"))?,
                        percent(a.percent, &format!("{field}.fault.abort.percent"))?,
                    ))
                })
                .transpose()?,
        },
    };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers: header_edits(
            r.request_headers.as_ref(),
            &format!("{field}.request_headers"),
        )?,
        response_headers: header_edits(
            r.response_headers.as_ref(),
            &format!("{field}.response_headers"),
        )?,
        fault,
        mirrors: r
            .mirrors
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let f = format!("{field}.mirrors[{i}]");
                Ok(Mirror {
                    backend: backend(
                        m.backend.as_ref().ok_or_else(|| err(format!("{f}.backend"), "missing"))?,
                        &format!("{f}.backend"),
                    )?,
                    percent: percent(m.percent, &format!("{f}.percent"))?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    })
}

fn traffic_policy(p: &proto::TrafficPolicy, field: &str) -> Result<TrafficPolicy, ConfigError> {
    use proto::load_balancer::Kind;
    let load_balancer = match &p.load_balancer {
        None => LoadBalancer::default(),
        Some(lb) => match Kind::try_from(lb.kind) {
            Ok(Kind::LeastRequest) => LoadBalancer::LeastRequest,
            Ok(Kind::RoundRobin) => LoadBalancer::RoundRobin,
            Ok(Kind::Random) => LoadBalancer::Random,
            Ok(Kind::HashHeader) => LoadBalancer::HashHeader(
                HeaderName::from_bytes(lb.hash_key.as_bytes()).map_err(|_| {
                    err(
                        format!("{field}.load_balancer.hash_key"),
                        format!("{:?} is not a header name", lb.hash_key),
                    )
                })?,
            ),
            Ok(Kind::HashCookie) if !lb.hash_key.is_empty() => {
                LoadBalancer::HashCookie(lb.hash_key.clone())
            }
            Ok(Kind::HashCookie) => {
                return Err(err(format!("{field}.load_balancer.hash_key"), "empty"));
            }
            Ok(Kind::HashSourceIp) => LoadBalancer::HashSourceIp,
            Err(_) => {
                return Err(err(
                    format!("{field}.load_balancer.kind"),
                    format!("unknown kind {}", lb.kind),
                ));
            }
        },
    };
    let pool = p.connection_pool.unwrap_or_default();
    let outlier = match &p.outlier_detection {
        Some(o) if o.consecutive_5xx > 0 => Some(Outlier {
            consecutive_5xx: o.consecutive_5xx,
            base_ejection: duration(
                &o.base_ejection_time,
                &format!("{field}.outlier_detection.base_ejection_time"),
            )?
            .unwrap_or(Duration::from_secs(30)),
            max_ejection_percent: o.max_ejection_percent.min(100),
        }),
        _ => None,
    };
    Ok(TrafficPolicy {
        load_balancer,
        max_requests: pool.max_requests,
        max_pending: pool.max_pending,
        max_requests_per_connection: pool.max_requests_per_connection,
        outlier,
    })
}

impl TryFrom<&proto::ServiceRoutes> for ServiceRoutes {
    type Error = ConfigError;

    fn try_from(s: &proto::ServiceRoutes) -> Result<Self, ConfigError> {
        if s.hostname.is_empty() {
            return Err(err("hostname", "empty"));
        }
        let ports = s
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let field = format!("ports[{i}]");
                let number = port(p.port, &format!("{field}.port"))?
                    .ok_or_else(|| err(format!("{field}.port"), "0 is not a port"))?;
                let protocol = match proto::Protocol::try_from(p.protocol) {
                    Ok(proto::Protocol::Undeclared) => Protocol::Undeclared,
                    Ok(proto::Protocol::Http) => Protocol::Http,
                    Ok(proto::Protocol::Http2) => Protocol::Http2,
                    Ok(proto::Protocol::Tcp) => Protocol::Tcp,
                    Err(_) => {
                        return Err(err(
                            format!("{field}.protocol"),
                            format!("unknown protocol {}", p.protocol),
                        ));
                    }
                };
                Ok((number, protocol))
            })
            .collect::<Result<_, _>>()?;
        let routes = s
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(r, &format!("routes[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let subsets = s
            .subsets
            .iter()
            .enumerate()
            .map(|(i, sub)| {
                if sub.name.is_empty() {
                    return Err(err(format!("subsets[{i}].name"), "empty"));
                }
                Ok(Subset {
                    name: sub.name.clone(),
                    workloads: sub.workloads.clone(),
                    traffic_policy: sub
                        .traffic_policy
                        .as_ref()
                        .map(|p| traffic_policy(p, &format!("subsets[{i}].traffic_policy")))
                        .transpose()?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ServiceRoutes {
            key: format!("{}/{}", s.namespace, s.hostname),
            hostname: s.hostname.clone(),
            ports,
            routes,
            subsets,
            traffic_policy: s
                .traffic_policy
                .as_ref()
                .map(|p| traffic_policy(p, "traffic_policy"))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}
