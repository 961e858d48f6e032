//! HTTP for the waypoint's tests and demo.
//!
//! `http-echo` answers every request with what it received, as JSON
//! (`pod`, `namespace`, `method`, `path`, `query`, `host`, `headers`,
//! `version`, `body_bytes`), over HTTP/1.1 or HTTP/2 (detected). Paths
//! change the answer: `/status/N` answers N, `/delay/MS` waits first,
//! `/flaky` fails every other request with 503, a `content-type:
//! application/grpc` request is answered gRPC-style (`grpc-status: 0` in
//! trailers), and a WebSocket upgrade echoes what it is sent.
//!
//! `request URL [--count N] [--header K:V]... [--method M] [--http2]
//! [--upgrade] [--grpc]` sends requests on one connection and prints a JSON
//! summary: answers by status, by `pod` (from http-echo's JSON), errors,
//! and the last answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Serves http-echo on `port` forever.
pub(crate) fn serve(port: u16) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
        let flaky = Arc::new(AtomicU64::new(0));
        loop {
            let (socket, peer) = listener.accept().await?;
            let flaky = flaky.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let flaky = flaky.clone();
                    async move { Ok::<_, Infallible>(answer(req, peer, &flaky).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(socket), service)
                    .await;
            });
        }
    })
}

async fn answer(
    mut req: Request<Incoming>,
    peer: std::net::SocketAddr,
    flaky: &AtomicU64,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "websocket")
            .body(full(Bytes::new()))
            .unwrap_or_default();
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        return Response::builder().status(status).body(full(Bytes::new())).unwrap_or_default();
    }
    if path == "/flaky" && flaky.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        return Response::builder().status(503).body(full("flaky\n")).unwrap_or_default();
    }
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").cloned())
        .unwrap_or_default();
    let summary = json!({
        "pod": env("POD_NAME"),
        "namespace": env("POD_NAMESPACE"),
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query().unwrap_or_default(),
        "host": host,
        "headers": headers,
        "version": format!("{:?}", req.version()),
        "client": peer.ip().to_string(),
    });
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let mut summary = summary;
    summary["body_bytes"] = json!(body);
    let text = summary.to_string();
    if grpc {
        // A gRPC answer: one length-prefixed message, then the status in
        // trailers, which must survive every proxy on the way.
        let mut message = vec![0u8];
        message.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_be_bytes());
        message.extend_from_slice(text.as_bytes());
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from(message))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = frames_body(frames).boxed();
        return Response::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(body)
            .unwrap_or_default();
    }
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(text))
        .unwrap_or_default()
}

/// A body of frames known in advance (data, then trailers).
fn frames_body(
    frames: Vec<Result<Frame<Bytes>, Infallible>>,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static {
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, Infallible>>);
    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Frames(frames.into())
}

/// `request` options.
struct Options {
    url: http::Uri,
    count: usize,
    headers: Vec<(String, String)>,
    method: http::Method,
    http2: bool,
    upgrade: bool,
    grpc: bool,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let usage = "usage: mesh-sample request URL [--count N] [--header K:V]... [--method M] [--http2] [--upgrade] [--grpc]";
    let url: http::Uri = args.first().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let mut o = Options {
        url,
        count: 1,
        headers: Vec::new(),
        method: http::Method::GET,
        http2: false,
        upgrade: false,
        grpc: false,
    };
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().ok_or_else(|| anyhow::anyhow!(usage));
        match args[i].as_str() {
            "--count" => {
                o.count = value()?.parse()?;
                i += 1;
            }
            "--header" => {
                let v = value()?;
                let (k, v) =
                    v.split_once(':').ok_or_else(|| anyhow::anyhow!("--header wants K:V"))?;
                o.headers.push((k.trim().to_string(), v.trim().to_string()));
                i += 1;
            }
            "--method" => {
                o.method = value()?.parse()?;
                i += 1;
            }
            "--http2" => o.http2 = true,
            "--upgrade" => o.upgrade = true,
            "--grpc" => {
                o.grpc = true;
                o.http2 = true;
            }
            other => anyhow::bail!("{other}: {usage}"),
        }
        i += 1;
    }
    Ok(o)
}

enum Sender {
    One(hyper::client::conn::http1::SendRequest<Body>),
    Two(hyper::client::conn::http2::SendRequest<Body>),
}

/// Sends the requests and prints the summary.
pub(crate) fn request(args: &[String]) -> anyhow::Result<()> {
    let o = options(args)?;
    runtime()?.block_on(async move {
        let authority =
            o.url.authority().ok_or_else(|| anyhow::anyhow!("URL needs a host"))?.clone();
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
        let mut pods: BTreeMap<String, u64> = BTreeMap::new();
        let mut errors: Vec<String> = Vec::new();
        let mut last = Value::Null;
        let mut sender: Option<Sender> = None;
        for _ in 0..o.count {
            if sender.as_ref().is_none_or(|s| match s {
                Sender::One(s) => s.is_closed(),
                Sender::Two(s) => s.is_closed(),
            }) {
                let stream = match tokio::net::TcpStream::connect(&address).await {
                    Ok(s) => s,
                    Err(e) => {
                        errors.push(format!("connect: {e}"));
                        continue;
                    }
                };
                let io = TokioIo::new(stream);
                sender = if o.http2 {
                    match hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await {
                        Ok((s, conn)) => {
                            tokio::spawn(conn);
                            Some(Sender::Two(s))
                        }
                        Err(e) => {
                            errors.push(format!("handshake: {e}"));
                            continue;
                        }
                    }
                } else {
                    match hyper::client::conn::http1::handshake(io).await {
                        Ok((s, conn)) => {
                            tokio::spawn(conn.with_upgrades());
                            Some(Sender::One(s))
                        }
                        Err(e) => {
                            errors.push(format!("handshake: {e}"));
                            continue;
                        }
                    }
                };
            }
            let mut builder = Request::builder().method(o.method.clone());
            builder = if o.http2 {
                builder.uri(o.url.clone())
            } else {
                builder
                    .uri(o.url.path_and_query().map_or("/", |p| p.as_str()))
                    .header("host", authority.as_str())
            };
            for (k, v) in &o.headers {
                builder = builder.header(k, v);
            }
            let body = if o.grpc {
                builder =
                    builder.header("content-type", "application/grpc").header("te", "trailers");
                full(Bytes::from_static(b"\0\0\0\0\0"))
            } else {
                full(Bytes::new())
            };
            if o.upgrade {
                builder = builder.header("connection", "upgrade").header("upgrade", "websocket");
            }
            let request = builder.body(body)?;
            let sent = match sender.as_mut() {
                Some(Sender::One(s)) => match s.ready().await {
                    Ok(()) => s.send_request(request).await,
                    Err(e) => Err(e),
                },
                Some(Sender::Two(s)) => s.send_request(request).await,
                None => continue,
            };
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("request: {e}"));
                    sender = None;
                    continue;
                }
            };
            *statuses.entry(response.status().as_u16().to_string()).or_default() += 1;
            if o.upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let mut io = TokioIo::new(hyper::upgrade::on(&mut response).await?);
                io.write_all(b"ping over the upgraded connection").await?;
                let mut back = vec![0u8; 33];
                io.read_exact(&mut back).await?;
                last = json!({"upgraded": String::from_utf8_lossy(&back)});
                sender = None;
                continue;
            }
            let collected = response.into_body().collect().await;
            let collected = match collected {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("body: {e}"));
                    continue;
                }
            };
            let trailers = collected.trailers().map(|t| {
                t.iter()
                    .map(|(k, v)| {
                        (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                    })
                    .collect::<BTreeMap<_, _>>()
            });
            let bytes = collected.to_bytes();
            let payload = if o.grpc && bytes.len() > 5 { bytes.slice(5..) } else { bytes };
            last = serde_json::from_slice(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
            if let Some(t) = trailers {
                last = json!({"message": last, "trailers": t});
            }
            let pod = last.get("pod").or_else(|| last.get("message").and_then(|m| m.get("pod")));
            if let Some(pod) = pod.and_then(Value::as_str) {
                *pods.entry(pod.to_string()).or_default() += 1;
            }
        }
        println!("{}", json!({"statuses": statuses, "pods": pods, "errors": errors, "last": last}));
        Ok(())
    })
}
