//! What every proxy's HTTP endpoints share: Prometheus metrics (15020),
//! readiness (15021), the log-level switch and the JSON shapes of the
//! workload store in config dumps (admin, 15000). Each proxy adds its own
//! admin routes around these.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::policy::Authorization;
use mesh_core::{GatewayAddress, GatewayDestination, Service, Workload};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::http::{Body, Route, text};
use crate::readiness::{Readiness, ReadinessBlock};

/// Changes the log filter (e.g. `info,ztunnel=debug`); given by the binary,
/// which owns the subscriber.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The listeners of a proxy's three HTTP endpoints.
#[derive(Debug)]
pub struct Endpoints {
    /// Admin (localhost).
    pub admin: tokio::net::TcpListener,
    /// Prometheus.
    pub metrics: tokio::net::TcpListener,
    /// Readiness.
    pub readiness: tokio::net::TcpListener,
}

/// Serves a proxy's admin route, its metrics and its readiness on
/// `endpoints` until `shutdown`.
pub fn serve_endpoints<R: Route>(
    endpoints: Endpoints,
    admin: Arc<R>,
    registry: Registry,
    readiness: Arc<Readiness>,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    tokio::spawn(crate::http::serve(endpoints.admin, admin, shutdown.clone().cancelled_owned()));
    tokio::spawn(crate::http::serve(
        endpoints.metrics,
        MetricsRoute::new(registry),
        shutdown.clone().cancelled_owned(),
    ));
    tokio::spawn(crate::http::serve(
        endpoints.readiness,
        Arc::new(ReadinessRoute(readiness)),
        shutdown.clone().cancelled_owned(),
    ));
}

/// Runs an xDS client until `shutdown`; `ready` is released once the
/// client holds its first complete configuration.
pub fn run_xds(
    client: xds::XdsClient,
    ready: ReadinessBlock,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let mut synced = client.synced();
    tokio::spawn(async move {
        if synced.wait_for(|s| *s).await.is_ok() {
            tracing::info!("configuration received from the control plane");
            drop(ready);
        }
    });
    tokio::spawn(client.run(shutdown.clone().cancelled_owned()));
}

/// `POST /logging?level=<filter>`.
pub fn set_log_level(request: &Request<Incoming>, set: Option<&SetLogLevel>) -> Response<Body> {
    let level =
        request.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
    match (level, set) {
        (None, _) => text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<filter>\n"),
        (Some(_), None) => text(StatusCode::NOT_IMPLEMENTED, "log level is fixed\n"),
        (Some(level), Some(set)) => match set(level) {
            Ok(()) => text(StatusCode::OK, format!("log level set to {level}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("bad level {level:?}: {e}\n")),
        },
    }
}

/// `:15020/metrics` (also `/stats/prometheus`, Istio's path).
pub struct MetricsRoute {
    registry: Registry,
}

impl MetricsRoute {
    /// Serves `registry`.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self { registry })
    }
}

impl Route for MetricsRoute {
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        match request.uri().path() {
            "/metrics" | "/stats/prometheus" => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => crate::http::response(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        out,
                    ),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "GET /metrics\n"),
        }
    }
}

/// `:15021/healthz/ready`: 200 once nothing is pending.
pub struct ReadinessRoute(pub Arc<Readiness>);

impl Route for ReadinessRoute {
    async fn respond(&self, _request: Request<Incoming>) -> Response<Body> {
        let pending = self.0.pending();
        if pending.is_empty() {
            text(StatusCode::OK, "ready\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("waiting for: {}\n", pending.join(", ")))
        }
    }
}

/// A workload, as the admin endpoints show it.
pub fn workload_json(w: &Workload) -> Value {
    json!({
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "addresses": w.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "node": w.node,
        "identity": w.identity.to_string(),
        "protocol": format!("{:?}", w.protocol).to_uppercase(),
        "status": format!("{:?}", w.status),
        "waypoint": w.waypoint.as_ref().map(gateway_json),
        "services": w.services.keys().map(ToString::to_string).collect::<Vec<_>>(),
        "authorizationPolicies": w.authorization_policies,
        "canonicalName": w.canonical_name,
        "canonicalRevision": w.canonical_revision,
        "workloadName": w.workload_name,
    })
}

/// A service, as the admin endpoints show it.
pub fn service_json(s: &Service) -> Value {
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "vips": s.vips.iter().map(|v| v.address.to_string()).collect::<Vec<_>>(),
        "ports": s.ports.iter().map(|p| json!({"port": p.service_port, "targetPort": p.target_port})).collect::<Vec<_>>(),
        "waypoint": s.waypoint.as_ref().map(gateway_json),
    })
}

/// An L4 policy, as the admin endpoints show it.
pub fn policy_json(p: &Authorization) -> Value {
    json!({
        "name": p.name,
        "namespace": p.namespace,
        "scope": format!("{:?}", p.scope),
        "action": format!("{:?}", p.action).to_uppercase(),
        "rules": p.rules.len(),
        "detail": format!("{:?}", p.rules),
    })
}

/// A waypoint or gateway address.
pub fn gateway_json(g: &GatewayAddress) -> Value {
    match &g.destination {
        GatewayDestination::Address(a) => json!(format!("{}:{}", a.address, g.hbone_port)),
        GatewayDestination::Hostname(h) => json!(format!("{h}:{}", g.hbone_port)),
    }
}
