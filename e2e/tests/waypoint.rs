//! The waypoint in a local cluster: a namespace bound to a waypoint, its
//! HTTP routed by VirtualService, DestinationRule and HTTPRoute, with
//! retries, timeouts, faults, gRPC and WebSocket passing, Istio's metrics,
//! AuthorizationPolicies enforced by the waypoint (a broken edit denying,
//! never widening), and traffic refused (never sent around it) when the
//! waypoint is down or missing, or when a client dials a pod behind it
//! directly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::{cluster, is_root, run_in_netns};

const MESH: &str = r#"
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
metadata: {name: sleep, namespace: apps}
spec: {nodeName: node-a, serviceAccountName: sleep, containers: [{name: sleep, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: curl, namespace: apps}
spec: {nodeName: node-a, serviceAccountName: curl, containers: [{name: curl, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: apps, labels: {app: reviews, version: v1}}
spec:
  nodeName: node-b
  serviceAccountName: reviews
  containers: [{name: app, image: none, command: [mesh-sample, http-echo, --port, "9080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: apps, labels: {app: reviews, version: v2}}
spec:
  nodeName: node-b
  serviceAccountName: reviews
  containers: [{name: app, image: none, command: [mesh-sample, http-echo, --port, "9080"]}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: apps}
spec: {clusterIP: 10.96.0.40, selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: apps}
spec: {clusterIP: 10.96.0.41, selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: apps, labels: {istio.io/use-waypoint: second}}
spec: {clusterIP: 10.96.0.42, selector: {app: reviews}, ports: [{name: http, port: 80, targetPort: 9080}]}
"#;

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: apps}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: apps}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /flaky}}]
    route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 3, retryOn: 5xx}
  - match: [{headers: {x-fault: {exact: abort}}}]
    route: [{destination: {host: reviews}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: ratings, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /delay}}]
    backendRefs: [{name: ratings, port: 80}]
    timeouts: {request: 500ms}
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /rewritten}}}]
    backendRefs: [{name: ratings, port: 80}]
  - backendRefs: [{name: ratings, port: 80}]
"#;

/// Attached to the waypoint: the `sleep` account may GET and HEAD, nobody
/// reaches `/admin`.
const AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: apps}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules:
  - from: [{source: {principals: [cluster.local/ns/apps/sa/sleep]}}]
    to: [{operation: {methods: [GET, HEAD]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: apps}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;

/// A P-256 key made for this test: its JWKS, and a signer of claims.
fn jwt_key() -> (String, impl Fn(Value) -> String) {
    use base64::Engine as _;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
    .to_string();
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
    let sign = move |claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test".into());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    (jwks, sign)
}

/// `mesh-sample request` from the sleep pod; its JSON summary.
fn request(netns: &str, url: &str, extra: &[&str]) -> Value {
    let mut args = vec!["request", url];
    args.extend_from_slice(extra);
    let sample = support::bin_dir().join("mesh-sample");
    let (out, _) = run_in_netns(netns, sample.to_str().unwrap(), &args);
    serde_json::from_str(out.trim()).unwrap_or(Value::Null)
}

fn count(summary: &Value, group: &str, key: &str) -> u64 {
    summary[group][key].as_u64().unwrap_or(0)
}

#[test]
fn a_waypoint_routes_retries_times_out_injects_faults_and_fails_closed() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let (c, state) = cluster("waypoint", MESH);
    let sleep = c.pod("apps", "sleep").unwrap().netns.clone();
    let reviews = "http://10.96.0.40/";
    support::eventually("HTTP through the waypoint", 30, || {
        count(&request(&sleep, reviews, &[]), "statuses", "200") == 1
    });
    // Around the waypoint: the pod dialled directly is refused at its
    // ztunnel, which says why.
    let pod_ip = c.pod("apps", "reviews-v1").unwrap().ip;
    let around = request(&sleep, &format!("http://{pod_ip}:9080/"), &["--count", "2"]);
    assert_eq!(count(&around, "statuses", "200"), 0, "{around}");
    assert_eq!(around["errors"].as_array().map_or(0, Vec::len), 2, "{around}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // reviews-v1 backs services bound to two waypoints: either may reach it.
    while !state.logged("denied by policy apps/waypoint-only~apps.second+apps.waypoint") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged:\n{}", state.logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let first = request(&sleep, reviews, &[]);
    let headers = &first["last"]["headers"];
    assert!(headers["traceparent"].as_str().is_some_and(|t| t.starts_with("00-")), "{first}");

    c.apply("routes.yaml", &localmesh::spec::parse(ROUTES, "routes").unwrap()).unwrap();
    support::eventually("header routing to v2", 30, || {
        let s = request(&sleep, reviews, &["--count", "20", "--header", "end-user: jason"]);
        count(&s, "pods", "reviews-v2") == 20
    });

    // 90/10 over 1000 requests (σ ≈ 9.5: ±5σ never fails by chance).
    let split = request(&sleep, reviews, &["--count", "1000"]);
    let v1 = count(&split, "pods", "reviews-v1");
    assert_eq!(count(&split, "statuses", "200"), 1000, "{split}");
    assert!((853..=947).contains(&v1), "v1 got {v1} of 1000: {split}");

    // Every other answer of /flaky is a 503: retries hide them.
    let flaky = request(&sleep, "http://10.96.0.40/flaky", &["--count", "20"]);
    assert_eq!(count(&flaky, "statuses", "200"), 20, "{flaky}");

    let abort = request(&sleep, reviews, &["--header", "x-fault: abort"]);
    assert_eq!(count(&abort, "statuses", "418"), 1, "{abort}");

    // HTTPRoute: a timeout fires; a prefix is rewritten.
    let slow = request(&sleep, "http://10.96.0.41/delay/3000", &[]);
    assert_eq!(count(&slow, "statuses", "504"), 1, "{slow}");
    let rewritten = request(&sleep, "http://10.96.0.41/v2/items", &[]);
    assert_eq!(rewritten["last"]["path"], "/rewritten/items", "{rewritten}");

    // gRPC (HTTP/2 with trailers) and a WebSocket pass.
    let grpc = request(&sleep, "http://10.96.0.41/pkg.Service/Call", &["--grpc"]);
    assert_eq!(grpc["last"]["trailers"]["grpc-status"], "0", "{grpc}");
    assert_eq!(grpc["last"]["message"]["version"], "HTTP/2.0", "{grpc}");
    let ws = request(&sleep, "http://10.96.0.41/ws", &["--upgrade"]);
    assert_eq!(ws["last"]["upgraded"], "ping over the upgraded connection", "{ws}");

    // Istio's metrics, reported by the waypoint.
    let wp = c.pod("apps", "waypoint-0").unwrap();
    let metrics =
        localmesh::net::http_get(&wp.netns, std::net::SocketAddr::new(wp.ip, 15020), "/metrics")
            .unwrap()
            .1;
    let ok = support::sample(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "waypoint"),
            ("destination_service", "reviews.apps.svc.cluster.local"),
            ("source_principal", "spiffe://cluster.local/ns/apps/sa/sleep"),
            // From the baggage the client's ztunnel sent.
            ("source_workload", "sleep"),
            ("destination_principal", "spiffe://cluster.local/ns/apps/sa/reviews"),
            ("response_code", "200"),
        ],
    );
    assert!(ok >= 1000, "{metrics}");
    assert!(
        support::sample(
            &metrics,
            "istio_requests_total",
            &[("response_code", "504"), ("response_flags", "UT")]
        ) >= 1,
        "{metrics}"
    );

    // What the waypoint was sent: the routes of what it fronts.
    let dump = localmesh::net::ztunnel_admin_json(&wp.netns, "/config_dump").unwrap();
    let names: Vec<&str> = dump["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "apps/reviews.apps.svc.cluster.local")
        .flat_map(|r| r["routes"].as_array().unwrap().iter().filter_map(|x| x["name"].as_str()))
        .collect();
    assert_eq!(names.len(), 4, "{dump}");
    assert!(names[0].starts_with("VirtualService apps/reviews http 0"), "{names:?}");

    // L7 authorization at the waypoint.
    let curl = c.pod("apps", "curl").unwrap().netns.clone();
    let authz = |text: &str| localmesh::spec::parse(text, "authz").unwrap();
    c.apply("authz.yaml", &authz(AUTHZ)).unwrap();
    support::eventually("POST refused by the waypoint's policy", 30, || {
        count(&request(&sleep, reviews, &["--method", "POST"]), "statuses", "403") == 1
    });
    let get = request(&sleep, reviews, &["--count", "5"]);
    assert_eq!(count(&get, "statuses", "200"), 5, "sleep may GET: {get}");
    let other = request(&curl, reviews, &["--count", "2"]);
    assert_eq!(count(&other, "statuses", "403"), 2, "curl is not a reader: {other}");
    let admin = request(&sleep, "http://10.96.0.40/public/../admin/users", &[]);
    assert_eq!(count(&admin, "statuses", "403"), 1, "normalised, then denied: {admin}");
    let slash = request(&sleep, "http://10.96.0.40/admin%2Fusers", &[]);
    assert_eq!(count(&slash, "statuses", "400"), 1, "an encoded slash is refused: {slash}");
    let metrics =
        localmesh::net::http_get(&wp.netns, std::net::SocketAddr::new(wp.ip, 15020), "/metrics")
            .unwrap()
            .1;
    let denied = support::sample(
        &metrics,
        "istio_requests_total",
        &[
            ("response_code", "403"),
            ("response_flags", "DENY"),
            ("source_principal", "spiffe://cluster.local/ns/apps/sa/curl"),
        ],
    );
    assert!(denied >= 2, "{metrics}");
    // The control plane says who enforces each policy (what `meshctl
    // policy explain` prints).
    let cp = localmesh::Cluster::read_state(&state.path).unwrap();
    let cp = cp.components.iter().find(|c| c.label == "controlplane").unwrap();
    let cp_admin = std::net::SocketAddr::new(localmesh::cluster::CONTROL_PLANE_IP.into(), 15014);
    let (_, report) = localmesh::net::http_get(&cp.netns, cp_admin, "/debug/policies").unwrap();
    let report: Value = serde_json::from_str(&report).unwrap();
    let readers = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "apps/readers")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(readers["layer"], "waypoint", "{report}");
    assert_eq!(readers["enforcedBy"], serde_json::json!(["apps/waypoint"]), "{report}");
    // A DENY of only HTTP attributes on a selector: ztunnel enforces it as
    // a deny of everything it selects, and the report says so.
    let selector_deny = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-posts-at-l4, namespace: apps}
spec: {selector: {matchLabels: {app: ratings-only}}, action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}
"#;
    c.apply("selector.yaml", &authz(selector_deny)).unwrap();
    support::eventually("the selector policy reported", 30, || {
        let (_, report) =
            localmesh::net::http_get(&cp.netns, cp_admin, "/debug/policies").unwrap_or_default();
        let report: Value = serde_json::from_str(&report).unwrap_or(Value::Null);
        report["policies"].as_array().into_iter().flatten().any(|p| {
            p["policy"] == "apps/no-posts-at-l4"
                && p["layer"] == "ztunnel"
                && p["notes"].to_string().contains("matches no running pod")
        })
    });
    c.apply("selector.yaml", &[]).unwrap();
    // A broken edit (a typo that would also let curl in) keeps the last
    // good version in force.
    let widened = AUTHZ.replace(
        "principals: [cluster.local/ns/apps/sa/sleep]",
        "principal: [cluster.local/ns/apps/sa/sleep, cluster.local/ns/apps/sa/curl]",
    );
    c.apply("authz.yaml", &authz(&widened)).unwrap();
    support::eventually("the broken edit reported", 30, || {
        state.logged("the last valid version stays in force")
    });
    let other = request(&curl, reviews, &[]);
    assert_eq!(count(&other, "statuses", "403"), 1, "still the last good version: {other}");
    // A new policy that does not read: its stand-in denies everything
    // through the waypoint it targets until it is fixed.
    let broken =
        AUTHZ.replace("name: readers", "name: broken").replace("principals:", "principal:");
    c.apply("broken.yaml", &authz(&broken)).unwrap();
    support::eventually("a broken new policy denies, never widens", 30, || {
        count(&request(&sleep, reviews, &[]), "statuses", "403") == 1
    });
    // Removed: open again, to every caller.
    c.apply("broken.yaml", &[]).unwrap();
    c.apply("authz.yaml", &[]).unwrap();
    support::eventually("no policy: open again", 30, || {
        count(&request(&curl, reviews, &["--method", "POST"]), "statuses", "200") == 1
    });

    // JWT: a RequestAuthentication on the waypoint with a key this test
    // makes, and /secure only for a request principal.
    let (jwks, sign) = jwt_key();
    let jwt_objects = format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: apps}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  jwtRules: [{{issuer: "https://issuer.test", audiences: [reviews], jwks: '{jwks}', outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: secure-needs-jwt, namespace: apps}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: DENY
  rules: [{{from: [{{source: {{notRequestPrincipals: ["*"]}}}}], to: [{{operation: {{paths: ["/secure*"]}}}}]}}]
"#
    );
    c.apply("jwt.yaml", &authz(&jwt_objects)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let good = sign(
        serde_json::json!({"iss": "https://issuer.test", "sub": "alice", "aud": "reviews", "exp": now + 600}),
    );
    let secure = "http://10.96.0.40/secure/data";
    support::eventually("a request without a token refused on /secure", 30, || {
        count(&request(&sleep, secure, &[]), "statuses", "403") == 1
    });
    let dump = localmesh::net::ztunnel_admin_json(&wp.netns, "/config_dump").unwrap();
    assert_eq!(dump["authentications"][0]["name"], "apps/jwt", "{dump}");
    assert_eq!(dump["authentications"][0]["issuers"][0], "https://issuer.test", "{dump}");
    let with = |token: &str| format!("authorization: Bearer {token}");
    let ok = request(&sleep, secure, &["--header", &with(&good)]);
    assert_eq!(count(&ok, "statuses", "200"), 1, "{ok}");
    let seen = &ok["last"]["headers"];
    assert!(seen["authorization"].is_null(), "the token is not forwarded: {ok}");
    assert_eq!(seen["x-jwt-sub"], "alice", "{ok}");
    let expired = sign(
        serde_json::json!({"iss": "https://issuer.test", "sub": "alice", "aud": "reviews", "exp": now - 3600}),
    );
    let refused = request(&sleep, secure, &["--header", &with(&expired)]);
    assert_eq!(count(&refused, "statuses", "401"), 1, "expired: {refused}");
    let wrong_aud = sign(
        serde_json::json!({"iss": "https://issuer.test", "sub": "alice", "aud": "other", "exp": now + 600}),
    );
    let refused = request(&sleep, reviews, &["--header", &with(&wrong_aud)]);
    assert_eq!(count(&refused, "statuses", "401"), 1, "wrong audience: {refused}");
    let garbage = request(&sleep, reviews, &["--header", "authorization: Bearer not.a.jwt"]);
    assert_eq!(count(&garbage, "statuses", "401"), 1, "{garbage}");
    let open = request(&sleep, reviews, &[]);
    assert_eq!(count(&open, "statuses", "200"), 1, "no token, not /secure: {open}");
    c.apply("jwt.yaml", &[]).unwrap();

    // Bound to a waypoint that does not exist yet: refused, never direct.
    let missing = request(&sleep, "http://10.96.0.42/", &["--count", "3"]);
    assert_eq!(count(&missing, "statuses", "200"), 0, "{missing}");
    assert_eq!(missing["errors"].as_array().map_or(0, Vec::len), 3, "{missing}");

    // A waypoint added to the running cluster takes the service bound to it.
    let mut c = c;
    c.add_waypoint("apps", "second", Some("service")).unwrap();
    let second = c.pod("apps", "second-0").unwrap().clone();
    support::eventually("details through the second waypoint", 30, || {
        let metrics = localmesh::net::http_get(
            &second.netns,
            std::net::SocketAddr::new(second.ip, 15020),
            "/metrics",
        )
        .map(|r| r.1)
        .unwrap_or_default();
        count(&request(&sleep, "http://10.96.0.42/", &[]), "statuses", "200") == 1
            && support::sample(
                &metrics,
                "istio_requests_total",
                &[("destination_service", "details.apps.svc.cluster.local")],
            ) >= 1
    });
    c.remove_waypoint("apps", "second").unwrap();
    assert!(c.pod("apps", "second-0").is_none());
    // Deleted again: refused again, once the proxies have heard.
    support::eventually("details refused without its waypoint", 30, || {
        let gone = request(&sleep, "http://10.96.0.42/", &[]);
        count(&gone, "statuses", "200") == 0 && gone["errors"].as_array().map_or(0, Vec::len) == 1
    });

    // The waypoint down: refused, never sent around it.
    let label = localmesh::cluster::waypoint_label("apps", "waypoint");
    c.stop(&label).unwrap();
    let down = request(&sleep, reviews, &["--count", "5"]);
    assert_eq!(count(&down, "statuses", "200"), 0, "{down}");
    assert_eq!(down["errors"].as_array().map_or(0, Vec::len), 5, "{down}");
    c.start(&label).unwrap();
    support::eventually("the waypoint back", 30, || {
        count(&request(&sleep, reviews, &[]), "statuses", "200") == 1
    });
    drop(state);
}
