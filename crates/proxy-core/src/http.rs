//! A tiny HTTP/1.1 server for admin, metrics and readiness endpoints.
//!
//! Routes are one function from request to response; the caller binds the
//! listener (port 0 in tests).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

/// A response body.
pub type Body = Full<Bytes>;

/// Answers one request.
pub trait Route: Send + Sync + 'static {
    /// The response to `request`.
    fn respond(&self, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `route` on `listener` until `shutdown`.
pub async fn serve<R: Route>(
    listener: TcpListener,
    route: Arc<R>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = hbone::accept::next_connection("http", || listener.accept()) => accepted,
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let route = route.clone();
                async move { Ok::<_, Infallible>(route.respond(request).await) }
            });
            if let Err(e) =
                http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

/// A response with `status`, content type and body.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Pretty JSON, 200.
pub fn json(value: &serde_json::Value) -> Response<Body> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    response(StatusCode::OK, "application/json", text + "\n")
}

/// Plain text with `status`.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", body.into())
}
