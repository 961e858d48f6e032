//! L7 routing conformance, in the style of the Gateway API conformance
//! suite but without Kubernetes or processes: each case in
//! `e2e/conformance/*.yaml` is objects (routes, services) added to a base
//! cluster, and requests with what the backend must receive (which pod,
//! path, host, headers) and what the client must get (status, headers).
//!
//! The objects go through the control plane's model (the same translation
//! a waypoint is sent), the routes and the AuthorizationPolicies attached
//! to the waypoint or the service through the waypoint's `l7` engine, and
//! each pod is an echo server on loopback answering with the request it
//! received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use controlplane::config::{ClusterState, parse_documents};
use controlplane::model::{MeshConfig, Model};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7::balance::Endpoint;
use l7::clients::Connector;
use l7::metrics::Peer;
use l7::policies::{Applicable, AttachedAuthentication, AttachedPolicy, PolicyIndex};
use l7::{Destinations, Downstream, Engine, EngineSettings, Protocol, ServiceRoutes, Target};
use proptest::strategy::Strategy;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Every case starts from this: a namespace bound to a waypoint, two
/// versions of `reviews` (with a Service each), and `ratings`.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-0, namespace: apps, labels: {app: reviews, version: v1}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-0, namespace: apps, labels: {app: reviews, version: v2}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-0, namespace: apps, labels: {app: ratings}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: apps}
spec: {clusterIP: 10.96.0.10, selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: apps}
spec: {clusterIP: 10.96.0.11, selector: {app: reviews, version: v1}, ports: [{name: http, port: 80, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: apps}
spec: {clusterIP: 10.96.0.12, selector: {app: reviews, version: v2}, ports: [{name: http, port: 80, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: apps}
spec: {clusterIP: 10.96.0.13, selector: {app: ratings}, ports: [{name: http, port: 80, targetPort: 9080}]}
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    objects: String,
    /// The Service the requests are sent to (port 80).
    target: String,
    requests: Vec<Exchange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    request: Sent,
    expect: Expected,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sent {
    /// The client's service account, `namespace/name` (default
    /// `apps/sleep`).
    from: Option<String>,
    method: Option<String>,
    path: String,
    host: Option<String>,
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct Expected {
    status: Option<u16>,
    /// The pod that must receive it.
    backend: Option<String>,
    /// The path (and query) the backend must receive.
    path: Option<String>,
    /// The host the backend must receive.
    host: Option<String>,
    /// Headers the backend must receive.
    headers: BTreeMap<String, String>,
    /// Headers the backend must not receive.
    absent_headers: Vec<String>,
    /// Headers of the answer.
    response_headers: BTreeMap<String, String>,
}

/// Each pod's echo server.
async fn echo(pod: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let pod = pod.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let pod = pod.clone();
                    async move {
                        let headers: BTreeMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_string())
                            })
                            .collect();
                        let body = json!({
                            "pod": pod,
                            "method": req.method().as_str(),
                            "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
                            "host": headers.get("host").cloned().unwrap_or_default(),
                            "headers": headers,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

struct Tcp;

impl Connector for Tcp {
    type Io = TcpStream;

    async fn connect(&self, endpoint: &Endpoint, _: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect(endpoint.address).await
    }
}

/// The model's view, with pods at their echo servers.
struct World {
    routes: HashMap<String, Arc<ServiceRoutes>>,
    /// The policies that reach the waypoint `apps/waypoint`.
    policies: PolicyIndex,
    /// Service key → (workload uid, echo address).
    endpoints: HashMap<String, Vec<(String, SocketAddr)>>,
}

impl Destinations for World {
    fn routes(&self, service: &str) -> Option<Arc<ServiceRoutes>> {
        self.routes.get(service).cloned()
    }

    fn endpoints(&self, service: &str, _port: u16, workloads: Option<&[String]>) -> Vec<Endpoint> {
        self.endpoints
            .get(service)
            .into_iter()
            .flatten()
            .filter(|(uid, _)| workloads.is_none_or(|w| w.contains(uid)))
            .map(|(uid, address)| Endpoint { uid: uid.as_str().into(), address: *address })
            .collect()
    }

    fn describe(&self, uid: &str) -> Peer {
        Peer { workload: uid.to_string(), ..Default::default() }
    }

    fn authorization(&self, target: &Target) -> Arc<Applicable> {
        match target {
            Target::Service { key, .. } => self.policies.for_service(key),
            Target::Workload { .. } => self.policies.for_workload(),
        }
    }
}

async fn run_case(case: &Case) -> Vec<String> {
    let (objects, bad) = parse_documents(&format!("{BASE}\n---\n{}", case.objects), &case.name);
    assert!(bad.is_empty(), "{}: {bad:?}", case.name);
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
    let mut model = Model::compute(&state, &MeshConfig::default());
    model.attach_authentications(&state, &MeshConfig::default(), &Default::default());
    let routes = model
        .routes
        .by_service
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Arc::new(ServiceRoutes::try_from(r).expect("the proxy reads what the model sends")),
            )
        })
        .collect();
    let mut endpoints: HashMap<String, Vec<(String, SocketAddr)>> = HashMap::new();
    for w in &model.workloads {
        let address = echo(w.name.clone()).await;
        for service in w.services.keys() {
            endpoints.entry(service.to_string()).or_default().push((w.uid.clone(), address));
        }
    }
    let policies: Vec<AttachedPolicy> = model
        .l7_policies
        .iter()
        .filter(|p| {
            let name = format!("{}/{}", p.namespace, p.name);
            model.waypoint_scopes.get("apps/waypoint").is_some_and(|s| {
                s.contains(&format!(
                    "{}{name}",
                    controlplane::model::policies::targeted::SCOPE_PREFIX
                ))
            })
        })
        .map(|p| AttachedPolicy::try_from(p).expect("the proxy reads what the model sends"))
        .collect();
    let authentications: Vec<AttachedAuthentication> = model
        .l7_authentications
        .iter()
        .map(|a| AttachedAuthentication::try_from(a).expect("the proxy reads what the model sends"))
        .collect();
    let world = World {
        routes,
        endpoints,
        policies: PolicyIndex::build(&policies, &authentications, "apps/waypoint"),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = Engine::new(Tcp, world, EngineSettings::default(), &mut registry);
    let target = format!("apps/{}.apps.svc.cluster.local", case.target);
    let mut failures = Vec::new();
    for (i, exchange) in case.requests.iter().enumerate() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let sent = &exchange.request;
        let from = sent.from.as_deref().unwrap_or("apps/sleep");
        let (namespace, account) = from.split_once('/').expect("from: namespace/account");
        let downstream = Downstream {
            source: "10.0.9.9:40000".parse().unwrap(),
            peer: Peer {
                namespace: namespace.into(),
                principal: format!("spiffe://cluster.local/ns/{namespace}/sa/{account}"),
                ..Default::default()
            },
            target: Target::Service { key: target.clone(), port: 80 },
            destination: "10.96.0.10:80".parse().unwrap(),
        };
        tokio::spawn(engine.clone().serve(server, downstream, Protocol::Http));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(sent.method.as_deref().unwrap_or("GET"))
            .uri(&sent.path)
            .header(
                "host",
                sent.host
                    .clone()
                    .unwrap_or_else(|| format!("{}.apps.svc.cluster.local", case.target)),
            );
        for (k, v) in &sent.headers {
            request = request.header(k, v);
        }
        let response =
            sender.send_request(request.body(Full::<Bytes>::default()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let response_headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echoed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let e = &exchange.expect;
        let mut fail = |what: String| {
            failures.push(format!(
                "{} request {i} ({} {}): {what}",
                case.name,
                sent.method.as_deref().unwrap_or("GET"),
                sent.path
            ))
        };
        if let Some(want) = e.status
            && want != status
        {
            fail(format!(
                "status {status}, expected {want}; body {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if let Some(want) = &e.backend
            && echoed["pod"] != want.as_str()
        {
            fail(format!("reached {}, expected {want}", echoed["pod"]));
        }
        if let Some(want) = &e.path
            && echoed["path"] != want.as_str()
        {
            fail(format!("backend got path {}, expected {want}", echoed["path"]));
        }
        if let Some(want) = &e.host
            && echoed["host"] != want.as_str()
        {
            fail(format!("backend got host {}, expected {want}", echoed["host"]));
        }
        for (k, v) in &e.headers {
            if echoed["headers"][k.to_ascii_lowercase()] != v.as_str() {
                fail(format!(
                    "backend got {k}: {}, expected {v}",
                    echoed["headers"][k.to_ascii_lowercase()]
                ));
            }
        }
        for k in &e.absent_headers {
            if !echoed["headers"][k.to_ascii_lowercase()].is_null() {
                fail(format!("backend got {k}, which must have been removed"));
            }
        }
        for (k, v) in &e.response_headers {
            let got = response_headers.get(k).and_then(|h| h.to_str().ok());
            if got != Some(v.as_str()) {
                fail(format!("answer header {k}: {got:?}, expected {v}"));
            }
        }
    }
    failures
}

#[tokio::test]
async fn every_conformance_case_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).unwrap();
        let case: Case =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        failures.extend(run_case(&case).await);
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} cases found in {}", dir.display());
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// One generated HTTPRoute match.
#[derive(Debug, Clone)]
struct GenMatch {
    exact: bool,
    path: String,
    method: Option<&'static str>,
    headers: usize,
}

/// One generated HTTPRoute: its age and its rules' single matches.
#[derive(Debug, Clone)]
struct GenRoute {
    age: u8,
    matches: Vec<GenMatch>,
}

fn gen_match() -> impl Strategy<Value = GenMatch> {
    use proptest::prelude::any;
    (
        any::<bool>(),
        proptest::sample::select(vec!["/", "/a", "/a/b", "/ab", "/a/b/c", "/b"]),
        proptest::option::of(proptest::sample::select(vec!["GET", "POST"])),
        0usize..3,
    )
        .prop_map(|(exact, path, method, headers)| GenMatch {
            exact,
            path: path.to_string(),
            method,
            headers,
        })
}

/// The Gateway API's choice among the matches that fit, written out
/// naively from the spec's precedence list, for comparison with the order
/// the control plane sorts into.
fn reference_choice(
    routes: &[GenRoute],
    path: &str,
    method: &str,
    headers: usize,
) -> Option<String> {
    let fits = |m: &GenMatch| {
        let path_fits = if m.exact {
            m.path == path
        } else {
            let prefix = m.path.trim_end_matches('/');
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty())
        };
        path_fits && m.method.is_none_or(|x| x == method) && m.headers <= headers
    };
    let mut best: Option<(usize, usize)> = None;
    // Does (r1, m1) win over (r2, m2)?
    let beats = |(r1, i1): (usize, usize), (r2, i2): (usize, usize)| -> bool {
        let (a, b) = (&routes[r1].matches[i1], &routes[r2].matches[i2]);
        if a.exact != b.exact {
            return a.exact;
        }
        if a.path.len() != b.path.len() {
            return a.path.len() > b.path.len();
        }
        if a.method.is_some() != b.method.is_some() {
            return a.method.is_some();
        }
        if a.headers != b.headers {
            return a.headers > b.headers;
        }
        if routes[r1].age != routes[r2].age {
            return routes[r1].age < routes[r2].age;
        }
        (r1, i1) < (r2, i2)
    };
    for (r, route) in routes.iter().enumerate() {
        for (i, m) in route.matches.iter().enumerate() {
            if fits(m) && best.is_none_or(|b| beats((r, i), b)) {
                best = Some((r, i));
            }
        }
    }
    best.map(|(r, i)| format!("HTTPRoute apps/r{r} rule {i} match 0"))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// For random HTTPRoutes and requests, the route the waypoint takes
    /// (the first that fits, in the control plane's order) is the one the
    /// Gateway API's precedence picks.
    #[test]
    fn precedence_agrees_with_a_naive_reading_of_the_spec(
        routes in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(gen_match(), 1..4)).prop_map(|(age, matches)| GenRoute { age, matches }),
            1..4,
        ),
        requests in proptest::collection::vec(
            (proptest::sample::select(vec!["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b/x", "/c"]),
             proptest::sample::select(vec!["GET", "POST", "PUT"]), 0usize..3),
            1..8,
        ),
    ) {
        use proptest::prelude::*;
        let mut yaml = String::new();
        for (r, route) in routes.iter().enumerate() {
            yaml += &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{r}, namespace: apps, creationTimestamp: \"2026-01-0{}T00:00:00Z\"}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n  rules:\n",
                route.age + 1
            );
            for m in &route.matches {
                let kind = if m.exact { "Exact" } else { "PathPrefix" };
                let method = m.method.map(|x| format!(", method: {x}")).unwrap_or_default();
                let headers: Vec<String> = (0..m.headers).map(|h| format!("{{name: h{h}, value: v}}")).collect();
                yaml += &format!(
                    "  - matches: [{{path: {{type: {kind}, value: \"{}\"}}{method}, headers: [{}]}}]\n    backendRefs: [{{name: reviews, port: 80}}]\n",
                    m.path,
                    headers.join(", ")
                );
            }
        }
        let (objects, bad) = parse_documents(&format!("{BASE}\n{yaml}"), "generated");
        prop_assert!(bad.is_empty(), "{bad:?}");
        let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, String::new())));
        let mut model = Model::compute(&state, &MeshConfig::default());
    model.attach_authentications(&state, &MeshConfig::default(), &Default::default());
        let routes_sent = ServiceRoutes::try_from(&model.routes.by_service["apps/reviews.apps.svc.cluster.local"]).unwrap();
        for (path, method, headers) in requests {
            let mut builder = http::Request::builder().method(method).uri(path);
            for h in 0..headers {
                builder = builder.header(format!("h{h}"), "v");
            }
            let parts = builder.body(()).unwrap().into_parts().0;
            let taken = routes_sent.route(&l7::matching::RequestFacts { parts: &parts, port: 80 }).map(|r| r.name.clone());
            prop_assert_eq!(taken, reference_choice(&routes, path, method, headers), "{} {} with {} headers", method, path, headers);
        }
    }
}
