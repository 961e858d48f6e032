//! The debug endpoint (15014): connected proxies, what each holds, the
//! objects that were rejected or translated with a change of meaning, and
//! Prometheus metrics (`/metrics`).
//!
//! Read-only JSON over plain HTTP/1.1; bind it to localhost unless it is
//! behind something that authenticates.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::debug;
use xds::DeltaAdsServer;

use crate::config::BadObject;
use crate::config::files::Snapshot;
use crate::model::Warning;
use crate::model::policies::Enforcement;

/// What the admin endpoint reports; updated by the process as it runs.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<RwLock<Reports>>,
    metrics: Arc<Metrics>,
}

/// The control plane's metrics.
struct Metrics {
    registry: Registry,
    rejected: Gauge,
    warnings: Gauge,
    resources: Family<TypeLabel, Gauge>,
    clients: Gauge,
    generation: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    type_url: String,
}

impl Default for AdminState {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        let rejected = Gauge::default();
        let warnings = Gauge::default();
        let resources = Family::<TypeLabel, Gauge>::default();
        let clients = Gauge::default();
        let generation = Gauge::default();
        registry.register(
            "config_rejected_objects",
            "Objects skipped in the latest config load (see /debug/config)",
            rejected.clone(),
        );
        registry.register(
            "config_translation_warnings",
            "Objects translated with a change of meaning in the latest model",
            warnings.clone(),
        );
        registry.register("xds_resources", "Resources served, by type URL", resources.clone());
        registry.register("xds_connected_clients", "Connected xDS streams", clients.clone());
        registry.register("xds_generation", "Generation of the xDS snapshot", generation.clone());
        Self {
            inner: Arc::default(),
            metrics: Arc::new(Metrics {
                registry,
                rejected,
                warnings,
                resources,
                clients,
                generation,
            }),
        }
    }
}

#[derive(Default)]
struct Reports {
    rejected: Vec<BadObject>,
    ignored: BTreeMap<String, usize>,
    read_at: Option<SystemTime>,
    warnings: Vec<Warning>,
    enforcement: BTreeMap<String, Enforcement>,
    generation: u64,
    /// A complete model has been published (readiness).
    published: bool,
}

impl AdminState {
    /// Records the latest config load and model.
    pub fn update(
        &self,
        snapshot: &Snapshot,
        warnings: Vec<Warning>,
        enforcement: BTreeMap<String, Enforcement>,
        generation: u64,
    ) {
        let m = &self.metrics;
        m.rejected.set(i64::try_from(snapshot.bad.len()).unwrap_or(i64::MAX));
        m.warnings.set(i64::try_from(warnings.len()).unwrap_or(i64::MAX));
        m.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        let mut reports = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *reports = Reports {
            rejected: snapshot.bad.clone(),
            ignored: snapshot.ignored.clone(),
            read_at: snapshot.read_at,
            warnings,
            enforcement,
            generation,
            published: true,
        };
    }

    /// Whether a model computed from a complete config load has been
    /// published: before that, proxies would be sent a partial mesh.
    pub fn is_ready(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).published
    }

    /// Records how many resources of a type are served.
    pub fn set_resources(&self, type_url: &str, count: usize) {
        let label = TypeLabel { type_url: type_url.to_string() };
        self.metrics.resources.get_or_create(&label).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn metrics_text(&self, clients: usize) -> String {
        self.metrics.clients.set(i64::try_from(clients).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry).is_err() {
            out.clear();
        }
        out
    }

    fn rejected_json(&self) -> Value {
        let reports = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let read_at = reports.read_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        json!({
            "generation": reports.generation,
            "read_at_unix_ms": read_at.map(|d| d.as_millis() as u64),
            "rejected": reports.rejected.iter().map(|b| json!({
                "source": b.source,
                "object": b.object.as_ref().map(ToString::to_string),
                "reason": b.reason,
                "in_force": b.consequence(),
            })).collect::<Vec<_>>(),
            "ignored_kinds": reports.ignored,
            "warnings": reports.warnings.iter().map(|w| json!({
                "object": w.object.to_string(),
                "message": w.message,
            })).collect::<Vec<_>>(),
        })
    }
}

impl AdminState {
    /// `/debug/policies`: every AuthorizationPolicy, who enforces it and
    /// what its translation changed.
    fn policies_json(&self) -> Value {
        let reports = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let policies: Vec<Value> = reports
            .enforcement
            .iter()
            .map(|(name, e)| {
                json!({
                    "policy": name,
                    "layer": e.layer,
                    "enforcedBy": e.by,
                    "notes": e.notes,
                })
            })
            .collect();
        json!({ "generation": reports.generation, "policies": policies })
    }
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState, ads: DeltaAdsServer) {
    loop {
        let (tcp, _) = hbone::accept::next_connection("admin", || listener.accept()).await;
        let state = state.clone();
        let ads = ads.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &state, &ads);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await
            {
                debug!(error = %e, "admin connection failed");
            }
        });
    }
}

fn route(
    req: &Request<Incoming>,
    state: &AdminState,
    ads: &DeltaAdsServer,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "only GET"}));
    }
    match req.uri().path() {
        "/debug/connections" => {
            let clients: Vec<Value> = ads
                .clients()
                .into_iter()
                .map(|c| {
                    json!({
                        "stream": c.stream,
                        "node": c.node_id,
                        "acked": c.acked,
                        "held": c.held,
                        "nacks": c.nacks,
                        "last_nack": c.last_nack,
                    })
                })
                .collect();
            reply(StatusCode::OK, json!({ "connections": clients }))
        }
        "/debug/config" => reply(StatusCode::OK, state.rejected_json()),
        "/debug/policies" => reply(StatusCode::OK, state.policies_json()),
        "/metrics" => {
            let mut response =
                Response::new(Full::new(Bytes::from(state.metrics_text(ads.clients().len()))));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/ready" if state.is_ready() => reply(StatusCode::OK, json!({"ok": true})),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "waiting_for": "the first complete config load"}),
        ),
        "/healthz" => reply(StatusCode::OK, json!({"ok": true})),
        other => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint {other}"),
                   "endpoints": ["/debug/connections", "/debug/config", "/debug/policies", "/metrics", "/ready"]}),
        ),
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
