//! The engine end to end on loopback: a client speaks HTTP into a tunnel
//! (an in-memory stream standing in for an accepted HBONE CONNECT), the
//! engine routes, and echo backends answer with what they received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7::balance::Endpoint;
use l7::clients::Connector;
use l7::metrics::Peer;
use l7::policies::{Applicable, AttachedPolicy, PolicyIndex};
use l7::{Destinations, Downstream, Engine, EngineSettings, Protocol, ServiceRoutes, Target};
use mesh_proto::l7 as proto;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo backend: answers with the request as JSON, its own name, and
/// behaviours chosen by the path (`/status/N`, `/delay/MS`, `/flaky`).
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flaky = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let flaky = flaky.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let flaky = flaky.clone();
                    async move { Ok::<_, Infallible>(echo(name, req, &flaky).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

/// Every request each backend saw: (pod, host, path).
static SEEN: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

fn seen_by(pod: &str) -> Vec<(String, String)> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == pod)
        .map(|(_, h, p)| (h.clone(), p.clone()))
        .collect()
}

async fn echo(name: &str, mut req: Request<Incoming>, flaky: &AtomicU32) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let host =
        req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    SEEN.lock().unwrap().push((name.to_string(), host, path.clone()));
    if req.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
        });
        return Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::default())
            .unwrap();
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Response::builder()
            .status(code.parse::<u16>().unwrap())
            .body(Full::default())
            .unwrap();
    }
    if path == "/flaky" && flaky.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        return Response::builder().status(503).body(Full::default()).unwrap();
    }
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let answer = json!({
        "pod": name, "method": method, "uri": uri, "headers": headers, "version": version,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", name)
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}

struct Tcp;

impl Connector for Tcp {
    type Io = TcpStream;

    async fn connect(&self, endpoint: &Endpoint, _: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect(endpoint.address).await
    }
}

#[derive(Default)]
struct Mesh {
    routes: Mutex<HashMap<String, Arc<ServiceRoutes>>>,
    endpoints: Mutex<HashMap<String, Vec<Endpoint>>>,
    policies: Mutex<Vec<AttachedPolicy>>,
}

/// The engine's view of `Mesh`, which the test keeps editing.
struct View(Arc<Mesh>);

impl Destinations for View {
    fn routes(&self, service: &str) -> Option<Arc<ServiceRoutes>> {
        self.0.routes.lock().unwrap().get(service).cloned()
    }

    fn endpoints(&self, service: &str, _port: u16, workloads: Option<&[String]>) -> Vec<Endpoint> {
        let all = self.0.endpoints.lock().unwrap().get(service).cloned().unwrap_or_default();
        all.into_iter()
            .filter(|e| workloads.is_none_or(|w| w.iter().any(|u| **u == *e.uid)))
            .collect()
    }

    fn describe(&self, uid: &str) -> Peer {
        Peer { workload: uid.to_string(), namespace: "apps".into(), ..Default::default() }
    }

    fn authorization(&self, target: &Target) -> Arc<Applicable> {
        let policies = self.0.policies.lock().unwrap();
        let index = PolicyIndex::new(policies.iter(), WAYPOINT);
        match target {
            Target::Service { key, .. } => index.for_service(key),
            Target::Workload { .. } => index.for_workload(),
        }
    }
}

/// The waypoint the engine plays in these tests.
const WAYPOINT: &str = "apps/waypoint";

struct Fixture {
    mesh: Arc<Mesh>,
    engine: Arc<Engine<Tcp, View>>,
    registry: Arc<Registry>,
}

fn key(name: &str) -> String {
    format!("apps/{name}.apps.svc.cluster.local")
}

impl Fixture {
    async fn new() -> Self {
        let mesh = Arc::new(Mesh::default());
        let mut registry = Registry::default();
        let engine = Engine::new(Tcp, View(mesh.clone()), EngineSettings::default(), &mut registry);
        Self { mesh, engine, registry: Arc::new(registry) }
    }

    async fn service(&self, name: &str, pods: &[&'static str]) {
        let mut endpoints = vec![];
        for pod in pods {
            endpoints.push(Endpoint { uid: (*pod).into(), address: backend(pod).await });
        }
        self.mesh.endpoints.lock().unwrap().insert(key(name), endpoints);
    }

    fn routes(
        &self,
        name: &str,
        routes: Vec<proto::Route>,
        extra: impl FnOnce(&mut proto::ServiceRoutes),
    ) {
        let mut resource = proto::ServiceRoutes {
            namespace: "apps".into(),
            hostname: format!("{name}.apps.svc.cluster.local"),
            routes,
            ..Default::default()
        };
        extra(&mut resource);
        let parsed = ServiceRoutes::try_from(&resource).unwrap();
        self.mesh.routes.lock().unwrap().insert(key(name), Arc::new(parsed));
    }

    /// A tunnel from `source` to `service`, served by the engine: the
    /// client's end.
    fn tunnel(&self, service: &str, source: SocketAddr) -> tokio::io::DuplexStream {
        self.tunnel_as(service, source, "client")
    }

    /// A tunnel opened by the `account` service account of `apps`.
    fn tunnel_as(
        &self,
        service: &str,
        source: SocketAddr,
        account: &str,
    ) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let downstream = Downstream {
            source,
            peer: Peer {
                workload: account.into(),
                namespace: "apps".into(),
                principal: format!("spiffe://cluster.local/ns/apps/sa/{account}"),
                ..Default::default()
            },
            target: Target::Service { key: key(service), port: 80 },
            destination: "10.0.0.2:80".parse().unwrap(),
        };
        tokio::spawn(self.engine.clone().serve(server, downstream, Protocol::Undeclared));
        client
    }

    /// An HTTP/1.1 client on a tunnel to `service`.
    async fn client(&self, service: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        self.client_from(service, "10.0.0.9:40000".parse().unwrap()).await
    }

    /// An HTTP/1.1 client at `source` on a tunnel to `service`.
    async fn client_from(
        &self,
        service: &str,
        source: SocketAddr,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        self.client_as(service, source, "client").await
    }

    /// An HTTP/1.1 client with the identity of `account`.
    async fn client_as(
        &self,
        service: &str,
        source: SocketAddr,
        account: &str,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let client = self.tunnel_as(service, source, account);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        sender
    }
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().uri(path).header("host", "reviews.apps.svc.cluster.local")
}

async fn send(
    client: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: http::request::Builder,
) -> (StatusCode, http::HeaderMap, Value) {
    client.ready().await.unwrap();
    let response = client.send_request(request.body(Full::default()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (parts.status, parts.headers, json)
}

fn to(service: &str, weight: u32) -> proto::Backend {
    proto::Backend { service: key(service), weight, ..Default::default() }
}

fn forward(backends: Vec<proto::Backend>) -> Option<proto::route::Action> {
    Some(proto::route::Action::Forward(proto::Forward { backends, ..Default::default() }))
}

fn header_is(name: &str, value: &str) -> proto::KeyMatch {
    proto::KeyMatch {
        name: name.into(),
        value: Some(proto::StringMatch {
            kind: Some(proto::string_match::Kind::Exact(value.into())),
        }),
        invert: false,
    }
}

#[tokio::test]
async fn routes_by_header_and_falls_back() {
    let f = Fixture::new().await;
    f.service("reviews-v1", &["v1"]).await;
    f.service("reviews-v2", &["v2"]).await;
    f.routes(
        "reviews",
        vec![
            proto::Route {
                name: "jason".into(),
                r#match: Some(proto::Match {
                    headers: vec![header_is("end-user", "jason")],
                    ..Default::default()
                }),
                action: forward(vec![to("reviews-v2", 1)]),
                ..Default::default()
            },
            proto::Route {
                name: "rest".into(),
                action: forward(vec![to("reviews-v1", 1)]),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    let (status, _, body) = send(&mut c, get("/reviews/1").header("end-user", "jason")).await;
    assert_eq!(status, 200);
    assert_eq!(body["pod"], "v2");
    assert_eq!(body["uri"], "/reviews/1");
    assert_eq!(body["headers"]["host"], "reviews.apps.svc.cluster.local");
    assert!(body["headers"]["traceparent"].as_str().unwrap().starts_with("00-"), "{body}");
    let (_, _, body) = send(&mut c, get("/reviews/1").header("end-user", "ana")).await;
    assert_eq!(body["pod"], "v1");
}

#[tokio::test]
async fn a_weighted_split_follows_its_weights() {
    let f = Fixture::new().await;
    f.service("reviews-v1", &["v1"]).await;
    f.service("reviews-v2", &["v2"]).await;
    f.routes(
        "reviews",
        vec![proto::Route {
            name: "split".into(),
            action: forward(vec![to("reviews-v1", 90), to("reviews-v2", 10)]),
            ..Default::default()
        }],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    let mut v1 = 0;
    for _ in 0..1000 {
        let (_, headers, _) = send(&mut c, get("/")).await;
        v1 += usize::from(headers["x-backend"] == "v1");
    }
    // 90 % of 1000: a binomial with σ ≈ 9.5; ±5σ never fails by chance.
    assert!((853..=947).contains(&v1), "v1 got {v1} of 1000");
}

#[tokio::test]
async fn retries_make_a_flaky_backend_succeed_and_timeouts_fire() {
    let f = Fixture::new().await;
    f.service("reviews", &["flaky"]).await;
    let retry = proto::Retry {
        attempts: 2,
        on_gateway_error: true,
        backoff: Some(mesh_proto::prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
        ..Default::default()
    };
    f.routes(
        "reviews",
        vec![
            proto::Route {
                name: "slow".into(),
                r#match: Some(proto::Match {
                    path: Some(proto::StringMatch {
                        kind: Some(proto::string_match::Kind::PathPrefix("/delay".into())),
                    }),
                    ..Default::default()
                }),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![to("reviews", 1)],
                    timeout: Some(mesh_proto::prost_types::Duration {
                        seconds: 0,
                        nanos: 100_000_000,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            },
            proto::Route {
                name: "retried".into(),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![to("reviews", 1)],
                    retry: Some(retry),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    for _ in 0..10 {
        let (status, _, _) = send(&mut c, get("/flaky")).await;
        assert_eq!(status, 200, "every other answer is a 503; one retry hides it");
    }
    let (status, _, _) = send(&mut c, get("/status/503")).await;
    assert_eq!(status, 503, "a backend that always fails still fails after the retries");
    let (status, _, body) = send(&mut c, get("/delay/2000")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body, "upstream request timeout\n");

    let metrics = {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &f.registry).unwrap();
        text
    };
    let flagged = |flags: &str, code: &str| {
        metrics.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"waypoint\"")
                && l.contains(&format!("response_flags=\"{flags}\""))
                && l.contains(&format!("response_code=\"{code}\""))
                && l.contains("destination_service=\"reviews.apps.svc.cluster.local\"")
                && l.contains("source_workload=\"client\"")
        })
    };
    assert!(flagged("-", "200"), "{metrics}");
    assert!(flagged("UT", "504"), "{metrics}");
}

#[tokio::test]
async fn faults_redirects_direct_answers_rewrites_and_header_edits() {
    let f = Fixture::new().await;
    f.service("reviews", &["v1"]).await;
    let prefix = |p: &str| {
        Some(proto::Match {
            path: Some(proto::StringMatch {
                kind: Some(proto::string_match::Kind::PathPrefix(p.into())),
            }),
            ..Default::default()
        })
    };
    let header = |n: &str, v: &str| proto::Header { name: n.into(), value: v.into() };
    f.routes(
        "reviews",
        vec![
            proto::Route {
                name: "abort".into(),
                r#match: prefix("/abort"),
                action: forward(vec![to("reviews", 1)]),
                fault: Some(proto::Fault {
                    abort: Some(proto::Abort { status: 418, percent: 100.0 }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            proto::Route {
                name: "moved".into(),
                r#match: prefix("/old"),
                action: Some(proto::route::Action::Redirect(proto::Redirect {
                    path: Some(proto::redirect::Path::Prefix("/new".into())),
                    status: 301,
                    ..Default::default()
                })),
                ..Default::default()
            },
            proto::Route {
                name: "direct".into(),
                r#match: prefix("/health"),
                action: Some(proto::route::Action::DirectResponse(proto::DirectResponse {
                    status: 200,
                    body: "fine".into(),
                })),
                ..Default::default()
            },
            proto::Route {
                name: "api".into(),
                r#match: prefix("/api"),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![to("reviews", 1)],
                    rewrite: Some(proto::Rewrite {
                        authority: "internal.reviews".into(),
                        path: Some(proto::rewrite::Path::Prefix("/v2".into())),
                    }),
                    ..Default::default()
                })),
                request_headers: Some(proto::HeaderEdits {
                    set: vec![header("x-route", "api")],
                    remove: vec!["x-secret".into()],
                    ..Default::default()
                }),
                response_headers: Some(proto::HeaderEdits {
                    add: vec![header("x-served-by", "waypoint")],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    let (status, _, body) = send(&mut c, get("/abort")).await;
    assert_eq!((status.as_u16(), body), (418, Value::String("fault filter abort\n".into())));
    let (status, headers, _) = send(&mut c, get("/old/page?x=1")).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "http://reviews.apps.svc.cluster.local/new/page?x=1");
    let (status, _, body) = send(&mut c, get("/health")).await;
    assert_eq!((status.as_u16(), body), (200, Value::String("fine".into())));
    let (status, headers, body) =
        send(&mut c, get("/api/items?page=2").header("x-secret", "s")).await;
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/v2/items?page=2");
    assert_eq!(body["headers"]["host"], "internal.reviews");
    assert_eq!(body["headers"]["x-route"], "api");
    assert!(body["headers"].get("x-secret").is_none(), "{body}");
    assert_eq!(headers["x-served-by"], "waypoint");
    let (status, _, _) = send(&mut c, get("/elsewhere")).await;
    assert_eq!(status, 404, "routes exist and none matched");
}

#[tokio::test]
async fn without_routes_a_service_gets_its_own_endpoints_and_upgrades_pass() {
    let f = Fixture::new().await;
    f.service("reviews", &["only"]).await;
    let mut c = f.client("reviews").await;
    let (status, _, body) = send(&mut c, get("/x")).await;
    assert_eq!((status.as_u16(), body["pod"].as_str()), (200, Some("only")));

    let upgrade = get("/ws").header("connection", "upgrade").header("upgrade", "websocket");
    c.ready().await.unwrap();
    let mut response = c.send_request(upgrade.body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut response).await.unwrap());
    io.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
}

#[tokio::test]
async fn http2_clients_reach_http2_backends_with_trailers_intact() {
    let f = Fixture::new().await;
    // A gRPC-style backend: HTTP/2, answers with trailers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            assert_eq!(req.version(), http::Version::HTTP_2);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = http_body_util::StreamBody::new(futures_stream(vec![
                hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")),
                hyper::body::Frame::trailers(trailers),
            ]));
            Ok::<_, Infallible>(
                Response::builder().header("content-type", "application/grpc").body(body).unwrap(),
            )
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(socket), service)
            .await
            .unwrap();
    });
    f.mesh
        .endpoints
        .lock()
        .unwrap()
        .insert(key("grpc"), vec![Endpoint { uid: "g".into(), address: addr }]);
    let client = f.tunnel("grpc", "10.0.0.9:40000".parse().unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .uri("http://grpc.apps:80/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x00")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

fn futures_stream(
    frames: Vec<hyper::body::Frame<Bytes>>,
) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> {
    futures_util::stream::iter(frames.into_iter().map(Ok))
}

#[tokio::test]
async fn mirrors_get_a_copy_and_delays_are_injected() {
    let f = Fixture::new().await;
    f.service("reviews", &["primary"]).await;
    f.service("shadow", &["mirror-pod"]).await;
    f.routes(
        "reviews",
        vec![
            proto::Route {
                name: "slow".into(),
                r#match: Some(proto::Match {
                    path: Some(proto::StringMatch {
                        kind: Some(proto::string_match::Kind::Exact("/slow".into())),
                    }),
                    ..Default::default()
                }),
                action: forward(vec![to("reviews", 1)]),
                fault: Some(proto::Fault {
                    delay: Some(proto::Delay {
                        delay: Some(mesh_proto::prost_types::Duration {
                            seconds: 0,
                            nanos: 200_000_000,
                        }),
                        percent: 100.0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            proto::Route {
                name: "mirrored".into(),
                action: forward(vec![to("reviews", 1)]),
                mirrors: vec![proto::Mirror { backend: Some(to("shadow", 1)), percent: 100.0 }],
                ..Default::default()
            },
        ],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    let (status, _, body) = send(&mut c, get("/copied")).await;
    assert_eq!((status.as_u16(), body["pod"].as_str()), (200, Some("primary")));
    // The copy is sent beside the request, its answer dropped: wait for it.
    for _ in 0..100 {
        if !seen_by("mirror-pod").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen_by("mirror-pod"),
        [("reviews.apps.svc.cluster.local-shadow".to_string(), "/copied".to_string())],
        "Envoy's shadow host"
    );

    let started = std::time::Instant::now();
    let (status, _, _) = send(&mut c, get("/slow")).await;
    assert_eq!(status, 200);
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &f.registry).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{") && l.contains("response_flags=\"DI\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_pools_do_not_grow_with_client_connections() {
    let f = Fixture::new().await;
    f.service("reviews", &["only"]).await;
    // Fifty client connections from one client address, each from its own
    // port (the fixture gives every connection source port 40000; vary it).
    for port in 0..50u16 {
        let source = SocketAddr::new("10.0.0.9".parse().unwrap(), 40000 + port);
        let mut sender = f.client_from("reviews", source).await;
        let (status, _, _) = send(&mut sender, get("/")).await;
        assert_eq!(status, 200);
    }
    // Answers are read, so connections are back in the pool: one key.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.engine.pooled_upstreams(), (1, 0));
}

#[tokio::test]
async fn a_silent_mirror_holds_a_bounded_number_of_copies() {
    let f = Fixture::new().await;
    f.service("reviews", &["primary"]).await;
    // The mirror accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    f.mesh
        .endpoints
        .lock()
        .unwrap()
        .insert(key("shadow"), vec![Endpoint { uid: "silent".into(), address: silent_addr }]);
    f.routes(
        "reviews",
        vec![proto::Route {
            name: "mirrored".into(),
            action: forward(vec![to("reviews", 1)]),
            mirrors: vec![proto::Mirror { backend: Some(to("shadow", 1)), percent: 100.0 }],
            ..Default::default()
        }],
        |_| {},
    );
    let mut c = f.client("reviews").await;
    for _ in 0..300 {
        let (status, _, _) = send(&mut c, get("/")).await;
        assert_eq!(status, 200, "the primary answers whatever the mirror does");
    }
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &f.registry).unwrap();
    let skipped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_l7_mirrors_skipped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(skipped >= 300 - 256, "copies past the limit are skipped: {skipped}\n{metrics}");
}

fn attach(f: &Fixture, policy: proto::Authorization) {
    f.mesh.policies.lock().unwrap().push(AttachedPolicy::try_from(&policy).unwrap());
}

fn authz(
    name: &str,
    action: proto::AuthorizationAction,
    rules: Vec<proto::AuthorizationRule>,
) -> proto::Authorization {
    proto::Authorization {
        namespace: "apps".into(),
        name: name.into(),
        action: action as i32,
        rules,
        waypoints: vec![WAYPOINT.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn authorization_policies_decide_before_routing() {
    let f = Fixture::new().await;
    f.service("reviews", &["authz-v1"]).await;
    // Readers: the `client` account may GET, nothing else.
    attach(
        &f,
        authz(
            "readers",
            proto::AuthorizationAction::Allow,
            vec![proto::AuthorizationRule {
                from: vec![proto::AuthorizationSource {
                    principals: vec!["cluster.local/ns/apps/sa/client".into()],
                    ..Default::default()
                }],
                to: vec![proto::AuthorizationOperation {
                    methods: vec!["GET".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        ),
    );
    // On the service only: nobody reaches /admin.
    let mut no_admin = authz(
        "no-admin",
        proto::AuthorizationAction::Deny,
        vec![proto::AuthorizationRule {
            to: vec![proto::AuthorizationOperation {
                paths: vec!["/admin*".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    no_admin.waypoints.clear();
    no_admin.services = vec![key("reviews")];
    attach(&f, no_admin);
    // A dry-run DENY of everything changes nothing.
    let mut dry =
        authz("dry", proto::AuthorizationAction::Deny, vec![proto::AuthorizationRule::default()]);
    dry.dry_run = true;
    attach(&f, dry);

    let mut c = f.client("reviews").await;
    let (status, _, body) = send(&mut c, get("/books")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(&mut c, get("/books").method("POST")).await;
    assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, Some("RBAC: access denied\n")));
    let (status, _, _) = send(&mut c, get("/books").method("post")).await;
    assert_eq!(status, 403, "a lower-case method is the same method");
    let (status, _, _) = send(&mut c, get("/admin/users")).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(&mut c, get("/public/../admin/users")).await;
    assert_eq!(status, 403, "dot segments are resolved before matching");
    let (status, _, _) = send(&mut c, get("//admin")).await;
    assert_eq!(status, 403, "slashes are merged before matching");
    let (status, _, body) = send(&mut c, get("/admin%2Fusers")).await;
    assert_eq!(status, 400, "an encoded slash is refused, not matched raw: {body}");
    let (status, _, body) = send(&mut c, get("/%61pi//v1/./books?x=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/api/v1/books?x=1", "the application gets the path the policy saw");
    let seen: Vec<String> = seen_by("authz-v1").into_iter().map(|(_, p)| p).collect();
    assert_eq!(seen, ["/books", "/api/v1/books"], "nothing refused reached the backend");

    let mut stranger = f.client_as("reviews", "10.0.0.8:40000".parse().unwrap(), "stranger").await;
    let (status, _, _) = send(&mut stranger, get("/books")).await;
    assert_eq!(status, 403, "another identity is not a reader");
}

/// A TCP echo server.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_connections_are_judged_by_the_l4_part_of_policies() {
    let f = Fixture::new().await;
    let db = Endpoint { uid: "db-0".into(), address: tcp_echo().await };
    f.mesh.endpoints.lock().unwrap().insert(key("db"), vec![db]);
    let tcp = |account: &str| {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let downstream = Downstream {
            source: "10.0.0.9:40000".parse().unwrap(),
            peer: Peer {
                namespace: "apps".into(),
                principal: format!("spiffe://cluster.local/ns/apps/sa/{account}"),
                ..Default::default()
            },
            target: Target::Service { key: key("db"), port: 5432 },
            destination: "10.0.0.2:5432".parse().unwrap(),
        };
        tokio::spawn(f.engine.clone().proxy_tcp(server, downstream));
        client
    };
    async fn echoes(mut c: tokio::io::DuplexStream) -> bool {
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }
    assert!(echoes(tcp("client")).await, "no policy: through");
    // An ALLOW naming a method cannot be checked on TCP: it allows nothing.
    attach(
        &f,
        authz(
            "get-only",
            proto::AuthorizationAction::Allow,
            vec![proto::AuthorizationRule {
                to: vec![proto::AuthorizationOperation {
                    methods: vec!["GET".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        ),
    );
    assert!(!echoes(tcp("client")).await, "an HTTP-only ALLOW lets no TCP through");
    attach(
        &f,
        authz(
            "client-db",
            proto::AuthorizationAction::Allow,
            vec![proto::AuthorizationRule {
                from: vec![proto::AuthorizationSource {
                    principals: vec!["cluster.local/ns/apps/sa/client".into()],
                    ..Default::default()
                }],
                to: vec![proto::AuthorizationOperation { ports: vec![5432], ..Default::default() }],
                ..Default::default()
            }],
        ),
    );
    assert!(echoes(tcp("client")).await, "an L4 ALLOW applies");
    assert!(!echoes(tcp("other")).await, "to whom it names");
    // A DENY naming a path denies every TCP connection it otherwise matches.
    attach(
        &f,
        authz(
            "no-admin",
            proto::AuthorizationAction::Deny,
            vec![proto::AuthorizationRule {
                to: vec![proto::AuthorizationOperation {
                    paths: vec!["/admin".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        ),
    );
    assert!(!echoes(tcp("client")).await, "an HTTP-only DENY denies all TCP");
}
