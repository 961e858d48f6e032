//! The three HTTP endpoints: admin on localhost:15000 (config dump,
//! connections, log level), Prometheus metrics on 15020, readiness on
//! 15021.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use proxy_core::http::{Body, Route, json, text};
use serde_json::{Value, json};

use crate::Ztunnel;

pub use proxy_core::admin::{MetricsRoute, ReadinessRoute, SetLogLevel};
use proxy_core::admin::{policy_json, service_json, set_log_level, workload_json};

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
            (&Method::POST, "/logging") => set_log_level(&request, self.set_log_level.as_ref()),
            (_, "/") => text(
                StatusCode::OK,
                "GET /config_dump\nGET /debug/connections\nPOST /logging?level=<filter>\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found; see /\n"),
        }
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
