//! The HTTP engine: serves HTTP/1.1 and HTTP/2 on a tunnel the caller
//! accepted, routes each request by the service's routes, and forwards it
//! over pooled upstream connections, with faults, timeouts, retries,
//! mirrors, upgrades, telemetry and an access-log line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::balance::{Balancer, Endpoint, PickError};
use crate::body::{self, Body, Counted};
use crate::clients::{Clients, Connector, SendError};
use crate::config::{
    Action, Backend, Forward, LoadBalancer, Protocol, Route, ServiceRoutes, TrafficPolicy,
};
use crate::filters;
use crate::guard::{self, Refusal as AuthzRefusal};
use crate::matching::RequestFacts;
use crate::metrics::{HttpLabels, HttpMetrics, Peer, Series};
use crate::policies::Applicable;

/// What the engine asks of the proxy around it.
pub trait Destinations: Send + Sync + 'static {
    /// The routes of a service, by resource name (`namespace/hostname`).
    fn routes(&self, service: &str) -> Option<Arc<ServiceRoutes>>;
    /// The endpoints of `service` for service port `port`; only these
    /// workloads when a subset names them.
    fn endpoints(&self, service: &str, port: u16, workloads: Option<&[String]>) -> Vec<Endpoint>;
    /// How the metrics name an endpoint's workload.
    fn describe(&self, uid: &str) -> Peer;
    /// The authorization policies that apply to requests to `target`.
    /// Required, with no default: a proxy that forgot it would let
    /// everything through.
    fn authorization(&self, target: &Target) -> Arc<Applicable>;
}

/// What a tunnel was opened to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A service, on one of its ports.
    Service {
        /// Resource name, `namespace/hostname`.
        key: String,
        /// The port.
        port: u16,
    },
    /// One workload, addressed directly.
    Workload {
        /// Where it is.
        endpoint: Endpoint,
    },
}

/// Who opened a tunnel and to what.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The client's address.
    pub source: SocketAddr,
    /// The client, as the metrics name it.
    pub peer: Peer,
    /// The destination.
    pub target: Target,
    /// The address the tunnel was opened to (a service's VIP and port, or
    /// the workload's).
    pub destination: SocketAddr,
}

/// Limits and names; the defaults are documented in `docs/waypoint.md`.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `reporter` label.
    pub reporter: String,
    /// Largest request body kept for retries and mirrors; larger bodies
    /// stream once and are neither retried nor mirrored.
    pub replay_limit: usize,
    /// A request's headers must arrive within this (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head, HTTP/1.1 (larger: 431).
    pub max_header_bytes: usize,
    /// Largest header list, HTTP/2.
    pub max_header_list_size: u32,
    /// Streams at once per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// How long the first bytes on an undeclared port are awaited before
    /// the connection is taken for TCP (a server-speaks-first protocol).
    pub detect_timeout: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            reporter: "waypoint".into(),
            replay_limit: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_header_list_size: 64 * 1024,
            max_concurrent_streams: 1024,
            detect_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

/// The engine: one per proxy, shared by every connection.
pub struct Engine<C: Connector, D: Destinations> {
    clients: Clients<C>,
    balancer: Balancer,
    destinations: D,
    metrics: HttpMetrics,
    downstream_errors: Family<ErrorLabels, Counter>,
    settings: EngineSettings,
    /// Mirrored requests in flight: copies past the limit are not sent.
    mirrors: Arc<tokio::sync::Semaphore>,
    mirrors_skipped: Counter,
}

/// Mirrored copies in flight at once; a mirror that stops answering can
/// hold no more than this many requests.
const MIRRORS_IN_FLIGHT: usize = 256;

/// A mirrored copy gets this long for its whole exchange.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one request, for its metrics and log line.
#[derive(Debug, Default)]
struct Exchange {
    flags: Vec<&'static str>,
    route: String,
    /// The authorization verdict's reason, when policies applied.
    policy: String,
    service: Option<String>,
    endpoint: Option<Endpoint>,
    attempts: u32,
}

fn direct(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Connection-level headers that never cross a proxy (RFC 9110 §7.6.1),
/// plus what HTTP/2 forbids.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too.
    let mut named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    named.extend(HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n)));
    let te_trailers =
        headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in &named {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        // gRPC needs it end to end.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

/// A fresh W3C `traceparent` with a span id of ours: the same trace when
/// the request carried one, a new (unsampled) trace when it did not.
fn next_traceparent(headers: &HeaderMap) -> HeaderValue {
    let span = format!("{:016x}", fastrand::u64(1..));
    let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| {
        let fields: Vec<&str> = v.split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        match fields.as_slice() {
            [version, trace, parent, flags]
                if hex(version, 2)
                    && *version != "ff"
                    && hex(trace, 32)
                    && hex(parent, 16)
                    && hex(flags, 2)
                    && *trace != "00000000000000000000000000000000" =>
            {
                Some((trace.to_ascii_lowercase(), flags.to_ascii_lowercase()))
            }
            _ => None,
        }
    });
    let (trace, flags) = incoming.unwrap_or_else(|| {
        (format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(..)), "00".to_string())
    });
    HeaderValue::from_str(&format!("00-{trace}-{span}-{flags}"))
        .unwrap_or(HeaderValue::from_static(""))
}

/// What identifies a request's metric series on one connection (the
/// client's labels are the connection's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    service: Option<String>,
    endpoint: Option<Arc<str>>,
    code: u16,
    flags: Vec<&'static str>,
    grpc: bool,
}

/// A connection's metric series by key, so a request records into its
/// series without rebuilding and hashing eighteen labels. Bounded: past
/// this many distinct series the cache is cleared.
#[derive(Default)]
struct SeriesCache(std::sync::Mutex<HashMap<SeriesKey, Series>>);

const SERIES_PER_CONNECTION: usize = 64;

/// Requests of one downstream connection: answered, and cancelled by the
/// client before their answer (their handler dropped unfinished).
#[derive(Default)]
struct StreamCounts {
    finished: AtomicU64,
    cancelled: AtomicU64,
    flood: tokio::sync::Notify,
}

/// After this many cancelled requests on one connection, more cancelled
/// than answered closes it (Envoy's premature-reset rule, with its
/// threshold).
const CANCELLED_BEFORE_JUDGING: u64 = 500;

/// Counts a request's outcome when its handler ends or is dropped.
struct Cancelled {
    counts: Arc<StreamCounts>,
    finished: bool,
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if self.finished {
            self.counts.finished.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cancelled = self.counts.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
        if cancelled >= CANCELLED_BEFORE_JUDGING
            && cancelled > self.counts.finished.load(Ordering::Relaxed)
        {
            self.counts.flood.notify_one();
        }
    }
}

fn streams_source(counts: &StreamCounts) -> String {
    format!(
        "{} cancelled, {} answered",
        counts.cancelled.load(Ordering::Relaxed),
        counts.finished.load(Ordering::Relaxed)
    )
}

/// A request body that can be sent more than once, or only once.
enum Replay {
    Bytes(Bytes),
    Once(Option<Body>),
}

impl Replay {
    fn take(&mut self) -> Option<Body> {
        match self {
            Replay::Bytes(b) => Some(body::full(b.clone())),
            Replay::Once(b) => b.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Replay::Bytes(_))
    }
}

/// An answer of our own instead of the upstream's: flag, status, text.
type Refusal = (&'static str, StatusCode, &'static str);

/// How an attempt ended.
enum Attempt {
    Answered(Response<Body>),
    Failed(SendError),
    TimedOut,
}

impl<C: Connector, D: Destinations> Engine<C, D> {
    /// An engine over `connector` and `destinations`, registering its
    /// metrics in `registry`.
    pub fn new(
        connector: C,
        destinations: D,
        settings: EngineSettings,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let downstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "mesh_l7_downstream_errors",
            "Downstream connections ended by a protocol error, an oversized or slow request head, or a reset flood",
            downstream_errors.clone(),
        );
        let mirrors_skipped = Counter::default();
        registry.register(
            "mesh_l7_mirrors_skipped",
            "Mirrored copies not sent because too many were in flight",
            mirrors_skipped.clone(),
        );
        Arc::new(Self {
            mirrors: Arc::new(tokio::sync::Semaphore::new(MIRRORS_IN_FLIGHT)),
            mirrors_skipped,
            clients: Clients::new(connector),
            balancer: Balancer::default(),
            destinations,
            metrics: HttpMetrics::register(registry),
            downstream_errors,
            settings,
        })
    }

    /// The proxy's view of destinations.
    pub fn destinations(&self) -> &D {
        &self.destinations
    }

    /// Upstream pool keys (HTTP/1.1, HTTP/2): one per endpoint and client
    /// address in use.
    pub fn pooled_upstreams(&self) -> (usize, usize) {
        self.clients.pooled()
    }

    /// Serves a tunnel by the protocol of the port it was opened to:
    /// TCP is proxied as bytes, HTTP served, an undeclared port detected.
    pub async fn serve_tunnel<I>(self: Arc<Self>, io: I, downstream: Downstream)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = match &downstream.target {
            Target::Service { key, port } => {
                self.destinations.routes(key).map_or(Protocol::Undeclared, |r| r.protocol(*port))
            }
            Target::Workload { .. } => Protocol::Undeclared,
        };
        match protocol {
            Protocol::Tcp => self.proxy_tcp(io, downstream).await,
            Protocol::Http | Protocol::Http2 => self.serve(io, downstream, protocol).await,
            Protocol::Undeclared => {
                match crate::detect::detect(io, self.settings.detect_timeout).await {
                    Ok((crate::detect::Detected::Http, io)) => {
                        self.serve(io, downstream, protocol).await
                    }
                    Ok((crate::detect::Detected::Tcp, io)) => self.proxy_tcp(io, downstream).await,
                    Err(e) => debug!(error = %e, "tunnel ended before its protocol was known"),
                }
            }
        }
    }

    /// Proxies `io` as bytes to an endpoint of the target. A failure on
    /// either side ends both.
    pub async fn proxy_tcp<I>(self: Arc<Self>, mut io: I, downstream: Downstream)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let applicable = self.destinations.authorization(&downstream.target);
        if !applicable.is_empty()
            && let Err(reason) = guard::connection(&applicable, &downstream)
        {
            // Dropping the tunnel resets it: the client sees a reset, not
            // a clean end.
            info!(target: "access", source = %downstream.source, destination = %downstream.destination,
                reason = %reason, flags = "DENY", "tcp connection denied");
            return;
        }
        let (group, endpoints, policy) = match &downstream.target {
            Target::Service { key, port } => (
                format!("{key}:{port}"),
                self.destinations.endpoints(key, *port, None),
                self.destinations.routes(key).map(|r| r.traffic_policy.clone()).unwrap_or_default(),
            ),
            Target::Workload { endpoint } => {
                (endpoint.address.to_string(), vec![endpoint.clone()], TrafficPolicy::default())
            }
        };
        let picked = match self.balancer.pick(&group, &endpoints, &policy, None) {
            Ok(p) => p,
            Err(e) => {
                info!(target: "access", source = %downstream.source, group, error = %e, "tcp connection refused");
                return;
            }
        };
        match self.clients.connector().connect(&picked.endpoint, downstream.source).await {
            Ok(mut upstream) => {
                let result = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
                info!(target: "access", source = %downstream.source, upstream = %picked.endpoint.address,
                    outcome = ?result.as_ref().map_err(ToString::to_string), "tcp connection");
            }
            Err(e) => {
                self.balancer.report(&picked, true, &policy);
                info!(target: "access", source = %downstream.source, upstream = %picked.endpoint.address,
                    error = %e, "tcp connection failed");
            }
        }
    }

    /// Serves HTTP on `io` until the client closes it. `protocol` is the
    /// port's (`Http2`: prior-knowledge HTTP/2 only; otherwise detected).
    pub async fn serve<I>(self: Arc<Self>, io: I, downstream: Downstream, protocol: Protocol)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let streams_source_addr = downstream.source;
        let downstream = Arc::new(downstream);
        let engine = self.clone();
        let streams = Arc::new(StreamCounts::default());
        let counts = streams.clone();
        let series = Arc::new(SeriesCache::default());
        let service = service_fn(move |request| {
            let engine = engine.clone();
            let downstream = downstream.clone();
            let series = series.clone();
            let guard = Cancelled { counts: counts.clone(), finished: false };
            async move {
                // The whole guard moves into the future (a closure would
                // capture only the field it writes), so it is dropped when
                // the request ends or is cancelled, not before.
                let mut guard = guard;
                let response = engine.handle(request, downstream, series).await;
                guard.finished = true;
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_read_timeout)
            .max_buf_size(self.settings.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.settings.max_header_list_size)
            .max_concurrent_streams(self.settings.max_concurrent_streams)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256));
        if protocol == Protocol::Http2 {
            builder = builder.http2_only();
        }
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = streams.flood.notified() => {
                // Most of this client's requests are cancelled before their
                // answer (HTTP/2 rapid reset, CVE-2023-44487): GOAWAY, finish
                // what is in flight, take no more.
                self.downstream_errors.get_or_create(&ErrorLabels { kind: "reset_flood".into() }).inc();
                info!(source = %streams_source_addr, requests = %streams_source(&streams), "client cancels most of its requests; connection closed");
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            let kind = match e.downcast_ref::<hyper::Error>() {
                Some(h) if h.is_timeout() => "header_timeout",
                Some(h) if h.is_parse_too_large() => "header_too_large",
                Some(h) if h.is_parse() => "malformed",
                Some(_) => "protocol",
                None => "protocol",
            };
            self.downstream_errors.get_or_create(&ErrorLabels { kind: kind.into() }).inc();
            debug!(error = %e, kind, "downstream connection ended with an error");
        }
    }

    async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        down: Arc<Downstream>,
        series: Arc<SeriesCache>,
    ) -> Response<Body> {
        let start = Instant::now();
        let mut exchange = Exchange::default();
        let protocol = if request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        {
            "grpc"
        } else {
            "http"
        };
        let upgrade = (request.version() == Version::HTTP_11 && is_upgrade(request.headers()))
            .then(|| hyper::upgrade::on(&mut request));
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let request_bytes = Arc::new(AtomicU64::new(0));
        let (parts, incoming) = request.into_parts();
        let incoming = Counted::new(incoming, request_bytes.clone(), None);
        let mut response = self
            .clone()
            .route(parts, body::from_hyper(incoming), &down, upgrade, &mut exchange)
            .await;

        // Metrics and the log line when the answer's body is over.
        let service = exchange.service.clone().or_else(|| match &down.target {
            Target::Service { key, .. } => Some(key.clone()),
            Target::Workload { .. } => None,
        });
        let key = SeriesKey {
            service,
            endpoint: exchange.endpoint.as_ref().map(|e| e.uid.clone()),
            code: response.status().as_u16(),
            flags: exchange.flags.clone(),
            grpc: protocol == "grpc",
        };
        let cached = series.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let metric_series = match cached {
            Some(s) => s,
            None => {
                let s = self.metrics.series(&self.labels(&key, &down, protocol));
                let mut cache = series.0.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= SERIES_PER_CONNECTION {
                    cache.clear();
                }
                cache.insert(key.clone(), s.clone());
                s
            }
        };
        let source = down.source;
        let upstream = exchange.endpoint.as_ref().map(|e| e.address);
        let route = std::mem::take(&mut exchange.route);
        let policy = std::mem::take(&mut exchange.policy);
        let attempts = exchange.attempts;
        let on_end = Box::new(move |response_bytes: u64| {
            let millis = start.elapsed().as_secs_f64() * 1000.0;
            let sent = request_bytes.load(Ordering::Relaxed);
            metric_series.record(millis, sent, response_bytes);
            if tracing::enabled!(target: "access", tracing::Level::INFO) {
                let flags =
                    if key.flags.is_empty() { "-".to_string() } else { key.flags.join(",") };
                let upstream = upstream.map_or_else(|| "-".to_string(), |u| u.to_string());
                let policy = if policy.is_empty() { "-" } else { policy.as_str() };
                info!(target: "access", %source, %method, %path, status = key.code,
                    %flags, route = %route, policy, %upstream, attempts,
                    duration_ms = format!("{millis:.1}"), request_bytes = sent, response_bytes,
                    "request");
            }
        });
        let (parts, body) = response.into_parts();
        response = Response::from_parts(
            parts,
            BodyExt::boxed(Counted::new(body, Arc::default(), Some(on_end))),
        );
        response
    }

    /// The labels of a series: the connection's client, and what the
    /// request reached.
    fn labels(&self, key: &SeriesKey, down: &Downstream, protocol: &str) -> HttpLabels {
        let destination =
            key.endpoint.as_ref().map(|uid| self.destinations.describe(uid)).unwrap_or_default();
        let mut labels = HttpLabels::new(&self.settings.reporter, &down.peer, &destination);
        match key.service.as_deref().and_then(|s| s.split_once('/')) {
            Some((namespace, hostname)) => {
                labels.destination_service = hostname.to_string();
                labels.destination_service_name =
                    hostname.split('.').next().unwrap_or(hostname).to_string();
                labels.destination_service_namespace = namespace.to_string();
            }
            None => {
                labels.destination_service = "unknown".into();
                labels.destination_service_name = "unknown".into();
                labels.destination_service_namespace = "unknown".into();
            }
        }
        labels.request_protocol = protocol.into();
        labels.response_code = key.code.to_string();
        labels.response_flags = if key.flags.is_empty() { "-".into() } else { key.flags.join(",") };
        labels
    }

    /// Picks the route and carries it out.
    async fn route(
        self: Arc<Self>,
        mut parts: http::request::Parts,
        body: Body,
        down: &Downstream,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        exchange: &mut Exchange,
    ) -> Response<Body> {
        let applicable = self.destinations.authorization(&down.target);
        if !applicable.is_empty() {
            match guard::request(&applicable, &mut parts, down) {
                Ok(reason) => exchange.policy = reason,
                Err(AuthzRefusal::Path(e)) => {
                    exchange.flags.push("DENY");
                    exchange.policy = format!("refused: {e}");
                    return direct(StatusCode::BAD_REQUEST, &format!("invalid path: {e}"));
                }
                Err(AuthzRefusal::Denied(reason)) => {
                    exchange.flags.push("DENY");
                    exchange.policy = reason;
                    return direct(StatusCode::FORBIDDEN, "RBAC: access denied");
                }
                Err(AuthzRefusal::Token(e)) => {
                    exchange.flags.push("DENY");
                    exchange.policy = format!("jwt: {e}");
                    let mut r = direct(StatusCode::UNAUTHORIZED, "Jwt verification fails");
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    );
                    return r;
                }
            }
        }
        let (routes, port) = match &down.target {
            Target::Service { key, port } => (self.destinations.routes(key), *port),
            Target::Workload { .. } => {
                // Addressed to one pod: no service routes apply.
                let forward = Forward::default();
                return self.forward(None, &forward, parts, body, down, upgrade, exchange).await;
            }
        };
        let facts = RequestFacts { parts: &parts, port };
        // Borrowed from `routes`, which this request holds: no copy.
        let route = routes.as_deref().and_then(|r| r.route(&facts));
        let service_routes_exist = routes.as_ref().is_some_and(|r| !r.routes.is_empty());
        let Some(route) = route else {
            if service_routes_exist {
                exchange.flags.push("NR");
                return direct(StatusCode::NOT_FOUND, "no route matched");
            }
            // No routes for this service: to the service itself.
            let service = routes.as_ref().map_or_else(|| service_key(down), |r| r.key.clone());
            let forward = Forward {
                backends: vec![Backend {
                    service,
                    port: None,
                    subset: None,
                    weight: 1,
                    request_headers: Default::default(),
                    response_headers: Default::default(),
                }],
                ..Default::default()
            };
            return self.forward(None, &forward, parts, body, down, upgrade, exchange).await;
        };
        exchange.route = route.name.clone();
        if let Some((delay, percent)) = route.fault.delay
            && roll(percent)
        {
            exchange.flags.push("DI");
            tokio::time::sleep(delay).await;
        }
        if let Some((status, percent)) = route.fault.abort
            && roll(percent)
        {
            exchange.flags.push("FI");
            return direct(status, "fault filter abort");
        }
        route.request_headers.apply(&mut parts.headers);
        let mut response = match &route.action {
            Action::Direct { status, body } => {
                let mut r = Response::new(body::full(Bytes::from(body.clone())));
                *r.status_mut() = *status;
                r
            }
            Action::Redirect(redirect) => filters::redirect(route, redirect, &parts),
            Action::Forward(forward) => {
                if !filters::apply_rewrite(route, &forward.rewrite, &mut parts) {
                    return direct(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the route's rewrite made an invalid request",
                    );
                }
                self.clone()
                    .forward(Some(route), forward, parts, body, down, upgrade, exchange)
                    .await
            }
        };
        route.response_headers.apply(response.headers_mut());
        response
    }

    fn choose_backend(forward: &Forward) -> Option<&Backend> {
        let total: u64 = forward.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = fastrand::u64(..total);
        forward.backends.iter().find(|b| {
            let w = u64::from(b.weight);
            if ticket < w {
                true
            } else {
                ticket -= w;
                false
            }
        })
    }

    fn hash_key(
        policy: &TrafficPolicy,
        parts: &http::request::Parts,
        source: SocketAddr,
    ) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match &policy.load_balancer {
            LoadBalancer::HashHeader(name) => parts.headers.get(name)?.as_bytes().hash(&mut h),
            LoadBalancer::HashCookie(name) => parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)?
                .1
                .hash(&mut h),
            LoadBalancer::HashSourceIp => source.ip().hash(&mut h),
            _ => return None,
        }
        Some(h.finish())
    }

    /// Where a backend's requests go: its endpoints and policy.
    fn resolve(
        &self,
        backend: &Backend,
        port: u16,
    ) -> Result<(String, Vec<Endpoint>, TrafficPolicy), &'static str> {
        let routes = self.destinations.routes(&backend.service);
        let port = backend.port.unwrap_or(port);
        match &backend.subset {
            None => {
                let policy = routes.map(|r| r.traffic_policy.clone()).unwrap_or_default();
                Ok((
                    format!("{}:{port}", backend.service),
                    self.destinations.endpoints(&backend.service, port, None),
                    policy,
                ))
            }
            Some(name) => {
                let routes = routes.ok_or("the backend's subsets are not known")?;
                let subset = routes.subset(name).ok_or("the backend has no such subset")?;
                let policy =
                    subset.traffic_policy.clone().unwrap_or_else(|| routes.traffic_policy.clone());
                let endpoints =
                    self.destinations.endpoints(&backend.service, port, Some(&subset.workloads));
                Ok((format!("{}:{port}#{name}", backend.service), endpoints, policy))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        self: Arc<Self>,
        route: Option<&Route>,
        forward: &Forward,
        mut parts: http::request::Parts,
        body: Body,
        down: &Downstream,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        exchange: &mut Exchange,
    ) -> Response<Body> {
        let downstream_version = parts.version;
        let port = match &down.target {
            Target::Service { port, .. } => *port,
            Target::Workload { endpoint } => endpoint.address.port(),
        };
        // Where the request goes: a backend by weight, or the one workload.
        let backend = match &down.target {
            Target::Workload { .. } if route.is_none() => None,
            _ => match Self::choose_backend(forward) {
                Some(b) => Some(b),
                None => {
                    exchange.flags.push("NC");
                    return direct(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the route has no usable backend",
                    );
                }
            },
        };
        let (group, endpoints, policy) = match (backend, &down.target) {
            (Some(b), _) => {
                exchange.service = Some(b.service.clone());
                b.request_headers.apply(&mut parts.headers);
                match self.resolve(b, port) {
                    Ok(t) => t,
                    Err(why) => {
                        exchange.flags.push("NC");
                        return direct(StatusCode::SERVICE_UNAVAILABLE, why);
                    }
                }
            }
            (None, Target::Workload { endpoint }) => {
                (endpoint.address.to_string(), vec![endpoint.clone()], TrafficPolicy::default())
            }
            (None, Target::Service { .. }) => {
                exchange.flags.push("NC");
                return direct(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the route has no usable backend",
                );
            }
        };
        let upgrade_request = upgrade.is_some();
        strip_hop_by_hop(&mut parts.headers, upgrade_request);
        let trace = next_traceparent(&parts.headers);
        parts.headers.insert("traceparent", trace);
        if !parts.headers.contains_key("x-request-id") {
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            if let Ok(v) = HeaderValue::from_str(&id) {
                parts.headers.insert("x-request-id", v);
            }
        }
        // HTTP/2 upstream when the client spoke it (gRPC needs it); an
        // upgrade is HTTP/1.1 by definition.
        let upstream_version = if downstream_version == Version::HTTP_2 && !upgrade_request {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if !set_upstream_uri(&mut parts, upstream_version) {
            return direct(StatusCode::BAD_REQUEST, "the request names no host");
        }

        // Retries and mirrors need the body again: keep it when it is
        // known to be small.
        let wants_replay = forward.retry.as_ref().is_some_and(|r| r.attempts > 0)
            || route.is_some_and(|r| !r.mirrors.is_empty());
        let mut replay = if wants_replay && !upgrade_request {
            let upper = body.size_hint().upper();
            if body.is_end_stream() {
                Replay::Bytes(Bytes::new())
            } else if upper.is_some_and(|u| u <= self.settings.replay_limit as u64) {
                match http_body_util::Limited::new(body, self.settings.replay_limit).collect().await
                {
                    Ok(collected) => Replay::Bytes(collected.to_bytes()),
                    Err(_) => {
                        exchange.flags.push("DPE");
                        return direct(
                            StatusCode::BAD_REQUEST,
                            "the request body could not be read",
                        );
                    }
                }
            } else {
                Replay::Once(Some(body))
            }
        } else {
            Replay::Once(Some(body))
        };

        if let (Some(route), Replay::Bytes(bytes)) = (route, &replay) {
            for mirror in &route.mirrors {
                if roll(mirror.percent) {
                    self.clone().mirror(
                        &mirror.backend,
                        &parts,
                        bytes.clone(),
                        port,
                        upstream_version,
                        down.source,
                    );
                }
            }
        }

        let retry = forward.retry.clone().unwrap_or_default();
        let attempts_allowed = if replay.replayable() { 1 + retry.attempts } else { 1 };
        let engine = self.clone();
        let source = down.source;
        let work = async {
            let mut backoff = retry.backoff;
            let mut last: Option<Result<Response<Body>, Refusal>> = None;
            for attempt in 0..attempts_allowed {
                if attempt > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(retry.backoff * 10);
                }
                exchange.attempts = attempt + 1;
                let picked = match engine.balancer.pick(
                    &group,
                    &endpoints,
                    &policy,
                    Self::hash_key(&policy, &parts, source),
                ) {
                    Ok(p) => p,
                    Err(PickError::NoEndpoints) => {
                        return Err(("UH", StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
                    }
                    Err(PickError::Overflow) => {
                        return Err(("UO", StatusCode::SERVICE_UNAVAILABLE, "upstream overflow"));
                    }
                };
                exchange.endpoint = Some(picked.endpoint.clone());
                let Some(attempt_body) = replay.take() else { break };
                let mut request = Request::from_parts(parts.clone(), attempt_body);
                *request.version_mut() = upstream_version;
                let send = engine.clients.send(
                    &picked.endpoint,
                    source,
                    upstream_version,
                    request,
                    policy.max_requests_per_connection,
                );
                let outcome = match forward.attempt_timeout {
                    Some(t) => tokio::time::timeout(t, send).await.map_or(Attempt::TimedOut, |r| {
                        r.map_or_else(Attempt::Failed, Attempt::Answered)
                    }),
                    None => send.await.map_or_else(Attempt::Failed, Attempt::Answered),
                };
                let last_attempt = attempt + 1 == attempts_allowed;
                match outcome {
                    Attempt::Answered(response) => {
                        let failed = response.status().is_server_error();
                        engine.balancer.report(&picked, failed, &policy);
                        if !last_attempt && retry.retries_status(response.status()) {
                            last = Some(Ok(response));
                            continue;
                        }
                        return Ok(response);
                    }
                    Attempt::Failed(e) => {
                        engine.balancer.report(&picked, true, &policy);
                        debug!(error = %e, "upstream attempt failed");
                        let (flag, retriable) = if e.is_connect() {
                            (
                                "UF",
                                retry.on_connect_failure || retry.on_5xx || retry.on_gateway_error,
                            )
                        } else {
                            ("UC", retry.on_reset || retry.on_5xx)
                        };
                        last = Some(Err((
                            flag,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream connect error or disconnect/reset before headers",
                        )));
                        if !retriable {
                            break;
                        }
                    }
                    Attempt::TimedOut => {
                        engine.balancer.report(&picked, true, &policy);
                        last = Some(Err((
                            "UT",
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream request timeout",
                        )));
                        if !(retry.on_5xx || retry.on_gateway_error || retry.on_reset) {
                            break;
                        }
                    }
                }
            }
            match last {
                Some(Ok(response)) => Ok(response),
                Some(Err(e)) => Err(e),
                None => Err(("UH", StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")),
            }
        };
        let outcome = match forward.timeout {
            Some(t) => tokio::time::timeout(t, work).await.unwrap_or(Err((
                "UT",
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout",
            ))),
            None => work.await,
        };
        let mut response = match outcome {
            Ok(r) => r,
            Err((flag, status, text)) => {
                exchange.flags.push(flag);
                if exchange.attempts > 1 {
                    exchange.flags.push("URX");
                }
                return direct(status, text);
            }
        };
        if let Some(downstream_upgrade) = upgrade
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(downstream_upgrade, upstream_upgrade) {
                    Ok((down_io, up_io)) => {
                        let mut down_io = TokioIo::new(down_io);
                        let mut up_io = TokioIo::new(up_io);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut down_io, &mut up_io).await
                        {
                            debug!(error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => debug!(error = %e, "upgrade failed"),
                }
            });
        }
        let (mut head, answer) = response.into_parts();
        strip_hop_by_hop(
            &mut head.headers,
            upgrade_request && head.status == StatusCode::SWITCHING_PROTOCOLS,
        );
        if let Some(b) = backend {
            b.response_headers.apply(&mut head.headers);
        }
        head.version = downstream_version;
        Response::from_parts(head, answer)
    }

    /// Sends a copy of a request to `backend`, answer discarded. Envoy
    /// marks mirrored requests by appending `-shadow` to the host.
    fn mirror(
        self: Arc<Self>,
        backend: &Backend,
        parts: &http::request::Parts,
        body: Bytes,
        port: u16,
        version: Version,
        source: SocketAddr,
    ) {
        let Ok((group, endpoints, policy)) = self.resolve(backend, port) else { return };
        let Ok(permit) = self.mirrors.clone().try_acquire_owned() else {
            self.mirrors_skipped.inc();
            return;
        };
        let mut parts = parts.clone();
        if let Some((host, port)) = filters::request_host(&parts) {
            let shadow = match port {
                Some(p) => format!("{host}-shadow:{p}"),
                None => format!("{host}-shadow"),
            };
            if let Ok(v) = HeaderValue::from_str(&shadow) {
                parts.headers.insert(header::HOST, v);
            }
            let _ = set_upstream_uri(&mut parts, version);
        }
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(picked) = self.balancer.pick(
                &group,
                &endpoints,
                &policy,
                Self::hash_key(&policy, &parts, source),
            ) else {
                return;
            };
            let request = Request::from_parts(parts, body::full(body));
            let exchange = async {
                if let Ok(response) = self
                    .clients
                    .send(
                        &picked.endpoint,
                        source,
                        version,
                        request,
                        policy.max_requests_per_connection,
                    )
                    .await
                {
                    // Read and drop the answer so the connection can be reused.
                    let _ = response.into_body().collect().await;
                }
            };
            let _ = tokio::time::timeout(MIRROR_TIMEOUT, exchange).await;
        });
    }
}

/// The service a tunnel was opened to, by resource name.
fn service_key(down: &Downstream) -> String {
    match &down.target {
        Target::Service { key, .. } => key.clone(),
        Target::Workload { endpoint } => endpoint.uid.to_string(),
    }
}

/// Puts the request's URI in the form the upstream version needs: origin
/// form plus `Host` for HTTP/1.1, absolute (scheme and authority) for HTTP/2.
fn set_upstream_uri(parts: &mut http::request::Parts, version: Version) -> bool {
    let Some((host, port)) = filters::request_host(parts) else { return false };
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let uri = if version == Version::HTTP_2 {
        parts.headers.remove(header::HOST);
        Uri::builder().scheme("http").authority(authority.as_str()).path_and_query(path).build()
    } else {
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
        Uri::builder().path_and_query(path).build()
    };
    match uri {
        Ok(u) => {
            parts.uri = u;
            true
        }
        Err(_) => false,
    }
}
