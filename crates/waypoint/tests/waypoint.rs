//! The waypoint on loopback: a client's HBONE tunnel to a service bound to
//! the waypoint is routed by HTTP and carried on, over HBONE with the
//! waypoint's identity, to the destination pod's HBONE server; tunnels to
//! anything the waypoint does not front are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hbone::{ConnectRequest, Pool, PoolConfig, TcpDialer};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::Address;
use mesh_proto::l7 as proto;
use prometheus_client::registry::Registry;
use proxy_core::certificates::{CertificateSettings, WorkloadCertificates};
use proxy_core::store::WorkloadStore;
use testkit::model::{service, workload};
use testkit::{ForwardingHandler, TestCaProvider};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waypoint::inbound::WaypointName;
use waypoint::policies::PolicyStore;
use waypoint::routes::RoutesStore;
use waypoint::{Parts, Waypoint};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Answers `<pod> <path>` so the test sees where a request went.
async fn http_backend(bind: SocketAddr, pod: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let text = format!("{pod} {}", req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn routes_http_through_the_waypoint_and_refuses_what_it_does_not_front() {
    let provider = TestCaProvider::new();
    let ca = &provider.ca;
    // The destination pods' "ztunnel": an HBONE server forwarding to the app.
    let v1_ip = ip("127.0.31.1");
    let v2_ip = ip("127.0.31.2");
    let hbone_listener = TcpListener::bind(SocketAddr::new(v1_ip, 0)).await.unwrap();
    let hbone_port = hbone_listener.local_addr().unwrap().port();
    let dest_handler = ForwardingHandler::new();
    let dest_tls =
        hbone::tls::server_config(&ca.issue(&ca.identity("apps", "reviews")), &[]).unwrap();
    let dest = Arc::new(hbone::HboneServer::new(
        dest_tls.clone(),
        dest_handler.clone(),
        Default::default(),
    ));
    tokio::spawn(dest.clone().run(hbone_listener, std::future::pending()));
    let second = TcpListener::bind(SocketAddr::new(v2_ip, hbone_port)).await.unwrap();
    tokio::spawn(dest.run(second, std::future::pending()));
    let app_port = http_backend(SocketAddr::new(v1_ip, 0), "v1").await.port();
    http_backend(SocketAddr::new(v2_ip, app_port), "v2").await;

    // What the waypoint knows: the services bound to it and their pods.
    let waypoint_ip = ip("127.0.32.1");
    let store = WorkloadStore::new();
    let svc = |name: &str, vip: &str| {
        Address::Service(Box::new(
            service(name, "apps", ip(vip), &[(80, app_port)]).waypoint(waypoint_ip).build(),
        ))
    };
    store.insert(svc("reviews", "10.96.0.5"));
    store.insert(svc("reviews-v2", "10.96.0.6"));
    store.insert(Address::Service(Box::new(
        service("other", "apps", ip("10.96.0.7"), &[(80, app_port)]).build(),
    )));
    let pod = |name: &str, at: IpAddr, services: &[&str]| {
        let mut b = workload(name, "apps", at).service_account("reviews");
        for s in services {
            b = b.endpoint_of(&format!("apps/{s}.apps.svc.cluster.local"), &[(80, app_port)]);
        }
        Address::Workload(Box::new(b.build()))
    };
    store.insert(pod("reviews-v1", v1_ip, &["reviews"]));
    store.insert(pod("reviews-v2", v2_ip, &["reviews-v2"]));
    let routes = RoutesStore::new();
    let key = |n: &str| format!("apps/{n}.apps.svc.cluster.local");
    let v2_route = proto::ServiceRoutes {
        namespace: "apps".into(),
        hostname: "reviews.apps.svc.cluster.local".into(),
        routes: vec![
            proto::Route {
                name: "canary".into(),
                r#match: Some(proto::Match {
                    headers: vec![proto::KeyMatch {
                        name: "x-canary".into(),
                        value: None,
                        invert: false,
                    }],
                    ..Default::default()
                }),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![proto::Backend {
                        service: key("reviews-v2"),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            },
            proto::Route {
                name: "default".into(),
                action: Some(proto::route::Action::Forward(proto::Forward {
                    backends: vec![proto::Backend {
                        service: key("reviews"),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut handler = waypoint::routes::RoutesHandler(routes.clone());
    xds::Handler::apply(
        &mut handler,
        xds::Update {
            resources: vec![(
                key("reviews"),
                prost_types::Any {
                    type_url: mesh_proto::type_url::SERVICE_ROUTES.into(),
                    value: prost::Message::encode_to_vec(&v2_route),
                },
            )],
            removed: vec![],
        },
    )
    .unwrap();

    // One policy, for the whole waypoint: only productpage may call, and
    // never on /private.
    let policies = PolicyStore::new("apps/waypoint");
    let mut policy_handler = waypoint::policies::PolicyHandler(policies.clone());
    let policy =
        |name: &str, action: proto::AuthorizationAction, rule: proto::AuthorizationRule| {
            let p = proto::Authorization {
                namespace: "apps".into(),
                name: name.into(),
                action: action as i32,
                rules: vec![rule],
                waypoints: vec!["apps/waypoint".into()],
                ..Default::default()
            };
            (
                format!("apps/{name}"),
                prost_types::Any {
                    type_url: mesh_proto::type_url::L7_AUTHORIZATION.into(),
                    value: prost::Message::encode_to_vec(&p),
                },
            )
        };
    xds::Handler::apply(
        &mut policy_handler,
        xds::Update {
            resources: vec![
                policy(
                    "productpage-only",
                    proto::AuthorizationAction::Allow,
                    proto::AuthorizationRule {
                        from: vec![proto::AuthorizationSource {
                            principals: vec!["cluster.local/ns/apps/sa/productpage".into()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
                policy(
                    "no-private",
                    proto::AuthorizationAction::Deny,
                    proto::AuthorizationRule {
                        to: vec![proto::AuthorizationOperation {
                            paths: vec!["/private*".into()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
            ],
            removed: vec![],
        },
    )
    .unwrap();
    xds::Handler::apply(
        &mut waypoint::policies::AuthenticationHandler(policies.clone()),
        xds::Update { resources: vec![], removed: vec![] },
    )
    .unwrap();

    let waypoint_id = ca.identity("apps", "waypoint");
    let certs = WorkloadCertificates::new(provider.clone(), CertificateSettings::default());
    let mut registry = Registry::default();
    let wp = Waypoint::new(
        Parts {
            me: WaypointName {
                namespace: "apps".into(),
                name: "waypoint".into(),
                addresses: vec![waypoint_ip],
            },
            identity: waypoint_id.clone(),
            network: String::new(),
            hbone_port,
            store,
            routes,
            policies,
            certs,
            settings: Default::default(),
            coalesce_writes: true,
        },
        &mut registry,
    );
    let listener = TcpListener::bind(SocketAddr::new(waypoint_ip, 0)).await.unwrap();
    let waypoint_addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(wp.serve_hbone(listener, stop.clone()));

    // A client, as its ztunnel would: HBONE to the waypoint, `:authority`
    // the service VIP.
    let client_id = ca.identity("apps", "productpage");
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let tunnel = |target: &str| {
        ConnectRequest::new(
            ca.issue(&client_id),
            waypoint_addr,
            vec![waypoint_id.clone()],
            target.parse().unwrap(),
        )
    };
    let stream = pool.connect(&tunnel("10.96.0.5:80")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut get = async |path: &str, canary: bool| {
        let mut r = Request::builder().uri(path).header("host", "reviews.apps");
        if canary {
            r = r.header("x-canary", "1");
        }
        sender.ready().await.unwrap();
        let response =
            sender.send_request(r.body(Full::<Bytes>::default()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body =
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec())
                .unwrap();
        (status, body)
    };
    assert_eq!(get("/a", false).await, (200, "v1 /a".into()));
    assert_eq!(get("/b", true).await, (200, "v2 /b".into()));
    assert_eq!(get("/private/x", false).await, (403, "RBAC: access denied\n".into()));

    // Another identity: the waypoint accepts the tunnel, its policy refuses
    // the requests.
    let stranger = ca.identity("apps", "stranger");
    let stream = pool
        .connect(&ConnectRequest::new(
            ca.issue(&stranger),
            waypoint_addr,
            vec![waypoint_id.clone()],
            "10.96.0.5:80".parse().unwrap(),
        ))
        .await
        .unwrap();
    let (mut other, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let r = Request::builder().uri("/a").header("host", "reviews.apps");
    let response = other.send_request(r.body(Full::<Bytes>::default()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 403, "not productpage");

    // The destination saw the waypoint, on behalf of the client.
    let seen = dest_handler.seen();
    assert!(!seen.is_empty());
    for connect in &seen {
        assert_eq!(connect.peer_identity, waypoint_id, "the waypoint's own identity");
        assert_eq!(
            connect.forwarded_for.as_ref().map(|f| f.ip),
            Some(ip("127.0.0.1")),
            "the client's address"
        );
        assert_eq!(connect.target.port(), app_port);
    }

    // Not fronted: refused, never forwarded.
    for target in ["10.96.0.7:80", "10.1.2.3:80", "10.96.0.5:81"] {
        let refused = pool.connect(&tunnel(target)).await.unwrap_err();
        assert!(refused.to_string().contains("401"), "{target}: {refused}");
    }
    stop.cancel();
}
