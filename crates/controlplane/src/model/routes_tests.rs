//! HTTPRoute, VirtualService and DestinationRule translation, from YAML as
//! users write it to the routes a waypoint is sent.

#![allow(clippy::unwrap_used)]

use mesh_proto::l7 as proto;
use proto::string_match::Kind;

use crate::config::{ClusterState, parse_documents};
use crate::model::{MeshConfig, Model};

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
metadata: {name: reviews-1, namespace: apps, labels: {app: reviews, version: v1}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-2, namespace: apps, labels: {app: reviews, version: v2}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: apps}
spec: {clusterIP: 10.96.0.10, selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 9080}, {name: db, port: 5432, appProtocol: tcp}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: apps, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 10.96.0.12, selector: {app: reviews, version: v2}, ports: [{port: 80, targetPort: 9080}]}
"#;

fn model(extra: &str) -> Model {
    let (objects, bad) = parse_documents(&format!("{BASE}\n---\n{extra}"), "test");
    assert!(bad.is_empty(), "{bad:?}");
    let (state, _) = ClusterState::from_objects(objects.into_iter().map(|o| (o, "test".into())));
    Model::compute(&state, &MeshConfig::default())
}

const REVIEWS: &str = "apps/reviews.apps.svc.cluster.local";

fn routes(m: &Model) -> &proto::ServiceRoutes {
    m.routes.by_service.get(REVIEWS).unwrap()
}

fn warnings(m: &Model) -> Vec<String> {
    m.warnings.iter().map(|w| format!("{}: {}", w.object, w.message)).collect()
}

fn forward(r: &proto::Route) -> &proto::Forward {
    match &r.action {
        Some(proto::route::Action::Forward(f)) => f,
        other => panic!("not a forward: {other:?}"),
    }
}

#[test]
fn a_fronted_service_without_routes_gets_itself_with_default_retries_and_its_port_protocols() {
    let m = model("");
    let r = routes(&m);
    assert_eq!(r.routes.len(), 1);
    let f = forward(&r.routes[0]);
    assert_eq!(f.backends[0].service, REVIEWS);
    assert_eq!(f.retry.as_ref().unwrap().attempts, 2);
    let protocols: Vec<_> = r.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(
        protocols,
        [(80, proto::Protocol::Http as i32), (5432, proto::Protocol::Tcp as i32)],
        "port name http → HTTP, appProtocol tcp → TCP"
    );
    assert!(
        !m.routes.by_service.contains_key("apps/reviews-v2.apps.svc.cluster.local"),
        "not fronted, not a backend"
    );
}

#[test]
fn http_route_matches_follow_gateway_api_precedence() {
    // Written in the worst order; precedence must sort them.
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-route, namespace: apps, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api/v2}, headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: reviews-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api/v2}}]
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: Exact, value: /api}}]
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}}]
    backendRefs: [{name: reviews, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-route, namespace: apps, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews-v2, port: 80}]
"#,
    );
    let names: Vec<&str> = routes(&m).routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "HTTPRoute apps/b-route rule 4 match 0", // Exact /api
            "HTTPRoute apps/b-route rule 2 match 0", // /api/v2 + a header
            "HTTPRoute apps/b-route rule 3 match 0", // /api/v2
            "HTTPRoute apps/a-route rule 0 match 0", // /api + method
            "HTTPRoute apps/a-route rule 1 match 0", // /api, older route
            "HTTPRoute apps/b-route rule 1 match 0", // /api, newer route
            "HTTPRoute apps/b-route rule 0 match 0", // /
            "HTTPRoute apps/b-route rule 5 match 0", // regex last
        ]
    );
    let first = &routes(&m).routes[0];
    assert_eq!(first.r#match.as_ref().unwrap().port, 80, "parentRef port restricts the match");
    assert!(matches!(
        first.r#match.as_ref().unwrap().path.as_ref().unwrap().kind,
        Some(Kind::Exact(_))
    ));
    // reviews-v2 is a backend: it joins the waypoint's scope with its own entry.
    assert!(m.routes.by_service.contains_key("apps/reviews-v2.apps.svc.cluster.local"));
    let scope = &m.waypoint_scopes["apps/waypoint"];
    assert!(scope.contains("apps/reviews-v2.apps.svc.cluster.local"), "{scope:?}");
    assert!(scope.contains("Kubernetes//Pod/apps/reviews-2"), "{scope:?}");
}

#[test]
fn http_route_filters_timeouts_and_retries() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{kind: Service, group: "", name: reviews}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Env, value: prod}], remove: [x-debug]}}
    - {type: URLRewrite, urlRewrite: {hostname: internal, path: {type: ReplaceFullPath, replaceFullPath: /x}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: reviews-v2, port: 80}, percent: 25}}
    - {type: CORS, cors: {}}
    backendRefs:
    - {name: reviews, port: 80, weight: 90}
    - {name: reviews-v2, port: 80, weight: 10, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-v, value: "2"}]}}]}
    - {name: ghost, port: 80}
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {attempts: 3, backoff: 100ms, codes: [503, 504]}
"#,
    );
    let r = routes(&m);
    match &r.routes[0].action {
        Some(proto::route::Action::Redirect(rd)) => {
            assert_eq!(rd.status, 301);
            assert_eq!(rd.path, Some(proto::redirect::Path::Prefix("/new".into())));
        }
        other => panic!("{other:?}"),
    }
    let rule = &r.routes[1];
    assert_eq!(rule.request_headers.as_ref().unwrap().set[0].name, "x-env");
    assert_eq!(rule.mirrors[0].percent, 25.0);
    let f = forward(rule);
    assert_eq!(
        f.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [90, 10],
        "the missing backend is left out"
    );
    assert_eq!(f.backends[1].response_headers.as_ref().unwrap().add[0].value, "2");
    assert_eq!(f.rewrite.as_ref().unwrap().authority, "internal");
    assert_eq!(f.timeout.unwrap().seconds, 10);
    assert_eq!(f.attempt_timeout.unwrap().seconds, 2);
    let retry = f.retry.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.codes.clone()), (3, vec![503, 504]));
    assert_eq!(retry.backoff.unwrap().nanos, 100_000_000);
    let w = warnings(&m);
    assert!(
        w.iter().any(|w| w.contains("HTTPRoute apps/r") && w.contains("\"CORS\" is not supported")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("service apps/ghost does not exist")), "{w:?}");
}

#[test]
fn virtual_services_keep_their_order_and_translate_every_field() {
    let m = model(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v2}}]
    rewrite: {uri: /r}
    fault: {delay: {fixedDelay: 2s, percentage: {value: 50}}, abort: {httpStatus: 503, percentage: {value: 10}}}
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews.apps.svc.cluster.local, subset: v2}, weight: 25}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,bogus"}
    mirror: {host: reviews-v2}
    mirrorPercentage: {value: 5}
    headers: {request: {set: {x-route: default}}, response: {remove: [server]}}
    corsPolicy: {allowOrigins: [{exact: "*"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: apps}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: X-User}}
    connectionPool: {http: {http2MaxRequests: 100, maxRequestsPerConnection: 10}}
    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 1m}
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
"#,
    );
    let r = routes(&m);
    assert_eq!(r.routes.len(), 2, "the sourceLabels match is skipped in the waypoint");
    let jason = &r.routes[0];
    assert_eq!(jason.r#match.as_ref().unwrap().headers[0].name, "end-user");
    let f = forward(jason);
    assert_eq!(
        f.rewrite.as_ref().unwrap().path,
        Some(proto::rewrite::Path::Prefix("/r".into())),
        "prefix match → prefix rewrite"
    );
    let fault = jason.fault.as_ref().unwrap();
    assert_eq!(
        (fault.delay.as_ref().unwrap().percent, fault.abort.as_ref().unwrap().status),
        (50.0, 503)
    );
    let split = forward(&r.routes[1]);
    assert_eq!(
        split.backends.iter().map(|b| (b.subset.as_str(), b.weight)).collect::<Vec<_>>(),
        [("v1", 75), ("v2", 25)]
    );
    assert_eq!(split.timeout.unwrap().nanos, 500_000_000);
    assert_eq!(split.attempt_timeout.unwrap().nanos, 500_000_000);
    let retry = split.retry.as_ref().unwrap();
    assert!(retry.on_5xx && retry.on_connect_failure && !retry.on_gateway_error);
    assert_eq!(r.routes[1].mirrors[0].percent, 5.0);
    let lb = r.traffic_policy.as_ref().unwrap().load_balancer.as_ref().unwrap();
    assert_eq!(
        (lb.kind, lb.hash_key.as_str()),
        (proto::load_balancer::Kind::HashHeader as i32, "x-user")
    );
    let subsets: Vec<_> =
        r.subsets.iter().map(|s| (s.name.as_str(), s.workloads.clone())).collect();
    assert_eq!(
        subsets,
        [
            ("v1", vec!["Kubernetes//Pod/apps/reviews-1".to_string()]),
            ("v2", vec!["Kubernetes//Pod/apps/reviews-2".to_string()])
        ]
    );
    let w = warnings(&m);
    for expected in [
        "sourceLabels",
        "\"bogus\" is not supported",
        "corsPolicy is not supported",
        "tls is not supported",
    ] {
        assert!(w.iter().any(|w| w.contains(expected)), "{expected}: {w:?}");
    }
}

#[test]
fn an_http_route_shadows_a_virtual_service_and_says_so() {
    let m = model(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: apps}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews-v2}}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hr, namespace: apps}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  rules: [{backendRefs: [{name: reviews, port: 80}]}]
"#,
    );
    let r = routes(&m);
    assert!(r.routes.iter().all(|r| r.name.starts_with("HTTPRoute")), "{:?}", r.routes);
    assert!(
        warnings(&m)
            .iter()
            .any(|w| w.starts_with("VirtualService apps/vs") && w.contains("HTTPRoute"))
    );
}

#[test]
fn bad_regexes_and_durations_are_reported_not_sent() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "(unclosed"}}]
    backendRefs: [{name: reviews, port: 80}]
  - backendRefs: [{name: reviews, port: 80}]
    timeouts: {request: ten seconds}
"#,
    );
    let r = routes(&m);
    assert_eq!(r.routes.len(), 1, "the bad match is skipped, the rest applies");
    assert!(forward(&r.routes[0]).timeout.is_none());
    let w = warnings(&m);
    assert!(w.iter().any(|w| w.contains("bad regular expression")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("timeouts.request")), "{w:?}");
    // Everything sent is readable by the proxy's strict reader.
    for routes in m.routes.by_service.values() {
        let encoded = prost::Message::encode_to_vec(routes);
        let decoded: proto::ServiceRoutes = prost::Message::decode(encoded.as_slice()).unwrap();
        assert_eq!(&decoded, routes);
    }
}
