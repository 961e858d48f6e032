//! The three HTTP endpoints: admin on localhost:15000 (config dump,
//! connections, log level), Prometheus metrics on 15020, readiness on
//! 15021.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::policy::Authorization;
use mesh_core::{GatewayAddress, GatewayDestination, Service, Workload};
use prometheus_client::registry::Registry;
use proxy_core::http::{Body, Route, json, text};
use proxy_core::readiness::Readiness;
use serde_json::{Value, json};

use crate::Ztunnel;

/// Changes the log filter (e.g. `info,ztunnel=debug`); given by the binary,
/// which owns the subscriber.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// `localhost:15000`.
pub struct AdminRoute {
    ztunnel: Arc<Ztunnel>,
    set_log_level: Option<SetLogLevel>,
}

impl AdminRoute {
    /// Admin for `ztunnel`; `set_log_level` enables `POST /logging?level=`.
    pub fn new(ztunnel: Arc<Ztunnel>, set_log_level: Option<SetLogLevel>) -> Arc<Self> {
        Arc::new(Self { ztunnel, set_log_level })
    }

    /// Everything ztunnel knows, as JSON.
    pub fn config_dump(&self) -> Value {
        let shared = self.ztunnel.shared();
        let store = &shared.store;
        json!({
            "workloads": store.workloads().iter().map(|w| workload_json(w)).collect::<Vec<_>>(),
            "services": store.services().iter().map(|s| service_json(s)).collect::<Vec<_>>(),
            "policies": store.policies().iter().map(|p| policy_json(p)).collect::<Vec<_>>(),
            "certificates": certificates_json(&self.ztunnel),
            "pods": self.ztunnel.pods().iter().map(|p| json!({
                "uid": p.uid, "name": p.name, "namespace": p.namespace,
                "serviceAccount": p.service_account,
                "hbonePool": self.ztunnel.pod_pool(&p.uid).map(|pool| json!({
                    "connectionsOpen": pool.connection_count(),
                    "connectionsOpened": pool.connections_opened(),
                    "tlsSessionsResumed": pool.sessions_resumed(),
                })),
            })).collect::<Vec<_>>(),
            "config": {
                "trustDomain": shared.config.trust_domain,
                "network": shared.config.network,
                "clusterId": shared.config.cluster_id,
                "preserveSource": shared.config.preserve_source,
                "ports": {
                    "outbound": shared.config.ports.outbound,
                    "inboundPlaintext": shared.config.ports.inbound_plaintext,
                    "hbone": shared.config.ports.hbone,
                    "dns": shared.config.ports.dns,
                },
                "drainDeadlineSeconds": shared.config.drain_deadline.as_secs_f64(),
                "dnsUpstream": shared.config.dns.upstream.map(|a| a.to_string()),
                "poolMaxStreamsPerConnection": shared.config.pool.max_streams_per_connection,
                "tlsSessionTicketSeconds": shared.config.session_ticket_lifetime.map_or(0, |d| d.as_secs()),
            },
        })
    }
}

impl Route for AdminRoute {
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/config_dump") => json(&self.config_dump()),
            (&Method::GET, "/debug/connections") => {
                json(&json!(self.ztunnel.shared().connections.list()))
            }
            (&Method::POST, "/logging") => {
                let level = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
                match (level, &self.set_log_level) {
                    (None, _) => {
                        text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<filter>\n")
                    }
                    (Some(_), None) => text(StatusCode::NOT_IMPLEMENTED, "log level is fixed\n"),
                    (Some(level), Some(set)) => match set(level) {
                        Ok(()) => text(StatusCode::OK, format!("log level set to {level}\n")),
                        Err(e) => {
                            text(StatusCode::BAD_REQUEST, format!("bad level {level:?}: {e}\n"))
                        }
                    },
                }
            }
            (_, "/") => text(
                StatusCode::OK,
                "GET /config_dump\nGET /debug/connections\nPOST /logging?level=<filter>\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found; see /\n"),
        }
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
                    Ok(()) => proxy_core::http::response(
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

fn workload_json(w: &Workload) -> Value {
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

fn service_json(s: &Service) -> Value {
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "vips": s.vips.iter().map(|v| v.address.to_string()).collect::<Vec<_>>(),
        "ports": s.ports.iter().map(|p| json!({"port": p.service_port, "targetPort": p.target_port})).collect::<Vec<_>>(),
        "waypoint": s.waypoint.as_ref().map(gateway_json),
    })
}

fn policy_json(p: &Authorization) -> Value {
    json!({
        "name": p.name,
        "namespace": p.namespace,
        "scope": format!("{:?}", p.scope),
        "action": format!("{:?}", p.action).to_uppercase(),
        "rules": p.rules.len(),
        "detail": format!("{:?}", p.rules),
    })
}

fn gateway_json(g: &GatewayAddress) -> Value {
    match &g.destination {
        GatewayDestination::Address(a) => json!(format!("{}:{}", a.address, g.hbone_port)),
        GatewayDestination::Hostname(h) => json!(format!("{h}:{}", g.hbone_port)),
    }
}

fn certificates_json(ztunnel: &Ztunnel) -> Vec<Value> {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    ztunnel
        .shared()
        .certs
        .statuses()
        .into_iter()
        .map(|s| {
            let current = s.state.current.as_ref().map(|c| {
                json!({
                    "serial": c.info().serial,
                    "notBefore": secs(c.info().not_before),
                    "notAfter": secs(c.info().not_after),
                    "refreshAt": secs(c.refresh_at()),
                    "chainLength": c.chain().len(),
                })
            });
            json!({
                "identity": s.identity.to_string(),
                "pods": s.leases,
                "state": if current.is_some() { "Available" } else { "Pending" },
                "certificate": current,
                "issued": s.state.issued,
                "lastError": s.state.last_error,
            })
        })
        .collect()
}
