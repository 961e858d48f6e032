//! The debug endpoint (15014): connected proxies, what each holds, and the
//! objects that were rejected or translated with a change of meaning.
//!
//! Read-only JSON over plain HTTP/1.1; bind it to localhost unless it is
//! behind something that authenticates.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::debug;
use xds::DeltaAdsServer;

use crate::config::BadObject;
use crate::model::Warning;

/// What the admin endpoint reports; updated by the process as it runs.
#[derive(Clone, Default)]
pub struct AdminState {
    inner: Arc<RwLock<Reports>>,
}

#[derive(Default)]
struct Reports {
    rejected: Vec<BadObject>,
    warnings: Vec<Warning>,
    generation: u64,
}

impl AdminState {
    /// Records the latest config load and model.
    pub fn update(&self, rejected: Vec<BadObject>, warnings: Vec<Warning>, generation: u64) {
        let mut reports = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *reports = Reports { rejected, warnings, generation };
    }

    fn rejected_json(&self) -> Value {
        let reports = self.inner.read().unwrap_or_else(|p| p.into_inner());
        json!({
            "generation": reports.generation,
            "rejected": reports.rejected.iter().map(|b| json!({
                "source": b.source,
                "object": b.object.as_ref().map(ToString::to_string),
                "reason": b.reason,
            })).collect::<Vec<_>>(),
            "warnings": reports.warnings.iter().map(|w| json!({
                "object": w.object.to_string(),
                "message": w.message,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState, ads: DeltaAdsServer) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
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
        "/ready" | "/healthz" => reply(StatusCode::OK, json!({"ok": true})),
        other => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint {other}"),
                   "endpoints": ["/debug/connections", "/debug/config", "/ready"]}),
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
