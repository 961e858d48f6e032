//! The node proxy in-process: pods on loopback addresses, real HBONE between
//! two ztunnels, redirection simulated by a table. Each test uses its own
//! 127.21.<n>.0/24 so tests can run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_core::Address;
use mesh_core::policy::{Action, Match, StringMatch};
use proxy_core::store::WorkloadStore;
use support::{FakeCa, Node, assert_refused, echo_on, greeter_on, ip, put, round_trip};
use testkit::model::{policy, service, workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SVC: &str = "apps/web.apps.svc.cluster.local";

/// Two nodes: `sleep` (client, node a) and `web` (server, node b).
struct TwoNodes {
    store: Arc<WorkloadStore>,
    a: Node,
    b: Node,
    client_ip: std::net::IpAddr,
    server_ip: std::net::IpAddr,
}

async fn two_nodes(net: u8) -> TwoNodes {
    let store = WorkloadStore::new();
    two_nodes_seeing(net, store.clone(), store).await
}

/// Two nodes whose workload stores may differ (one saw an update the other
/// has not).
async fn two_nodes_seeing(
    net: u8,
    store_a: Arc<WorkloadStore>,
    store_b: Arc<WorkloadStore>,
) -> TwoNodes {
    two_nodes_configured(net, store_a, store_b, support::config()).await
}

/// [`two_nodes_seeing`], node b running with `b_config`.
async fn two_nodes_configured(
    net: u8,
    store_a: Arc<WorkloadStore>,
    store_b: Arc<WorkloadStore>,
    b_config: ztunnel::ProxyConfig,
) -> TwoNodes {
    let ca = FakeCa::new();
    let client_ip = ip(&format!("127.21.{net}.1"));
    let server_ip = ip(&format!("127.21.{net}.2"));
    for store in [&store_a, &store_b] {
        put(
            store,
            Address::Workload(Box::new(
                workload("sleep", "apps", client_ip).service_account("sleep").build(),
            )),
        );
        put(
            store,
            Address::Workload(Box::new(
                workload("web", "apps", server_ip)
                    .service_account("web")
                    .node("node-b")
                    .endpoint_of(SVC, &[(80, 8080)])
                    .build(),
            )),
        );
    }
    let a = Node::new(store_a.clone(), ca.clone());
    let b = Node::with_config(store_b, ca, b_config);
    a.add_pod("sleep", "apps", "sleep", client_ip);
    b.add_pod("web", "apps", "web", server_ip);
    a.ready().await;
    b.ready().await;
    TwoNodes { store: store_a, a, b, client_ip, server_ip }
}

impl TwoNodes {
    fn capture(&self) -> SocketAddr {
        SocketAddr::new(self.client_ip, 15001)
    }

    async fn connect(&self, dst: SocketAddr) -> tokio::net::TcpStream {
        self.a.redirects.connect(self.client_ip, self.capture(), dst).await
    }

    fn connect_having_sent(&self, dst: SocketAddr, first: &[u8]) -> tokio::net::TcpStream {
        self.a.redirects.connect_having_sent(self.client_ip, self.capture(), dst, first)
    }
}

#[tokio::test]
async fn pod_to_pod_across_nodes_is_mutual_tls_with_both_identities() {
    let m = two_nodes(1).await;
    let app = echo_on(m.server_ip, 8080).await;
    let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let back = round_trip(m.connect(app).await, &data).await;
    assert!(back == data, "8 MiB echoed intact through two ztunnels");
    m.a.idle().await;
    m.b.idle().await;
    let server_side = [
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
        ("source_principal", "spiffe://cluster.local/ns/apps/sa/sleep"),
        ("destination_principal", "spiffe://cluster.local/ns/apps/sa/web"),
        ("source_workload", "sleep"),
        ("destination_workload", "web"),
    ];
    assert_eq!(
        m.b.sample("istio_tcp_connections_opened_total", &server_side),
        1,
        "{}",
        m.b.metrics()
    );
    assert_eq!(m.b.sample("istio_tcp_connections_closed_total", &server_side), 1);
    assert_eq!(m.b.sample("istio_tcp_received_bytes_total", &server_side), data.len() as u64);
    assert_eq!(m.b.sample("istio_tcp_sent_bytes_total", &server_side), data.len() as u64);
    let client_side = [("reporter", "source"), ("connection_security_policy", "mutual_tls")];
    assert_eq!(m.a.sample("istio_tcp_connections_opened_total", &client_side), 1);
}

#[tokio::test]
async fn service_vip_reaches_an_endpoint_and_a_deleted_endpoint_stops_receiving() {
    let m = two_nodes(2).await;
    echo_on(m.server_ip, 8080).await;
    let vip = ip("10.96.21.2");
    put(&m.store, Address::Service(Box::new(service("web", "apps", vip, &[(80, 8080)]).build())));
    let back = round_trip(m.connect(SocketAddr::new(vip, 80)).await, b"via the service").await;
    assert_eq!(back, b"via the service");
    let svc_labels =
        [("destination_service", "web.apps.svc.cluster.local"), ("reporter", "source")];
    m.a.idle().await;
    assert_eq!(m.a.sample("istio_tcp_connections_opened_total", &svc_labels), 1);
    // The destination side infers the service the client addressed.
    let destination_side =
        [("destination_service", "web.apps.svc.cluster.local"), ("reporter", "destination")];
    m.b.idle().await;
    assert_eq!(m.b.sample("istio_tcp_connections_opened_total", &destination_side), 1);

    m.store.remove(&support::uid("apps", "web"));
    assert_refused(m.connect(SocketAddr::new(vip, 80)).await).await;
    assert_eq!(m.a.sample("istio_tcp_connections_opened_total", &[("response_flags", "UH")]), 1);
}

#[tokio::test]
async fn policies_allow_and_deny_and_changes_apply_live() {
    let m = two_nodes(3).await;
    let app = echo_on(m.server_ip, 8080).await;
    let only_api = policy(
        "apps",
        "only-api",
        Action::Allow,
        vec![Match {
            principals: vec![StringMatch::Exact("cluster.local/ns/apps/sa/api".into())],
            ..Match::default()
        }],
    );
    m.store.insert_policy(only_api);
    assert_refused(m.connect(app).await).await;
    m.b.idle().await;
    assert_eq!(m.b.sample("istio_tcp_connections_opened_total", &[("response_flags", "DENY")]), 1);
    assert_eq!(
        m.a.sample(
            "istio_tcp_connections_opened_total",
            &[("response_flags", "DENY"), ("reporter", "source")]
        ),
        1
    );

    m.store.insert_policy(policy(
        "apps",
        "only-api",
        Action::Allow,
        vec![Match {
            principals: vec![StringMatch::Exact("cluster.local/ns/apps/sa/sleep".into())],
            ..Match::default()
        }],
    ));
    assert_eq!(
        round_trip(m.connect(app).await, b"hello").await,
        b"hello",
        "allowed after the change"
    );
}

#[tokio::test]
async fn plaintext_is_allowed_under_permissive_and_refused_under_strict() {
    let m = two_nodes(4).await;
    let app = echo_on(m.server_ip, 8080).await;
    let outsider = ip("127.21.4.9");
    let plaintext_port = SocketAddr::new(m.server_ip, 15006);
    let stream = m.b.redirects.connect(outsider, plaintext_port, app).await;
    assert_eq!(round_trip(stream, b"plain").await, b"plain");
    m.b.idle().await;
    assert_eq!(
        m.b.sample(
            "istio_tcp_connections_opened_total",
            &[("connection_security_policy", "none"), ("response_flags", "-")]
        ),
        1
    );

    // STRICT arrives as a DENY policy for callers without a principal,
    // listed by the workload.
    let mut strict = policy(
        "istio-system",
        "istio_converted_static_strict",
        Action::Deny,
        vec![Match { not_principals: vec![StringMatch::Presence], ..Match::default() }],
    );
    strict.scope = mesh_core::policy::PolicyScope::WorkloadSelector;
    m.store.insert_policy(strict);
    let mut web = m.store.workload(&support::uid("apps", "web")).unwrap().as_ref().clone();
    web.authorization_policies = vec!["istio-system/istio_converted_static_strict".into()];
    put(&m.store, Address::Workload(Box::new(web)));
    let stream = m.b.redirects.connect(outsider, plaintext_port, app).await;
    assert_refused(stream).await;
    // Mesh traffic still works.
    assert_eq!(round_trip(m.connect(app).await, b"mtls").await, b"mtls");
}

#[tokio::test]
async fn destinations_outside_the_mesh_pass_through() {
    let m = two_nodes(5).await;
    let outside = echo_on(ip("127.21.5.50"), 0).await;
    assert_eq!(round_trip(m.connect(outside).await, b"passthrough").await, b"passthrough");
    m.a.idle().await;
    assert_eq!(
        m.a.sample(
            "istio_tcp_connections_opened_total",
            &[("connection_security_policy", "none"), ("reporter", "source")]
        ),
        1
    );
}

#[tokio::test]
async fn server_speaks_first_and_half_close_work() {
    let m = two_nodes(6).await;
    let app = greeter_on(m.server_ip, 8080, b"220 ready\r\n").await;
    let mut stream = m.connect(app).await;
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(
        &greeting, b"220 ready\r\n",
        "the server's first bytes arrive before the client sends"
    );
    // The client half-closes; the server's echo still arrives in full.
    let back = round_trip(stream, b"QUIT").await;
    assert_eq!(back, b"QUIT");
}

#[tokio::test]
async fn a_waypoint_bound_pod_refuses_callers_that_bypass_it() {
    // The destination's ztunnel knows web is behind a waypoint; the
    // client's has not heard yet and tunnels straight to web.
    let (store_a, store_b) = (WorkloadStore::new(), WorkloadStore::new());
    let m = two_nodes_seeing(7, store_a, store_b.clone()).await;
    let app = echo_on(m.server_ip, 8080).await;
    let waypoint_ip = ip("127.21.7.99");
    put(
        &store_b,
        Address::Workload(Box::new(
            workload("waypoint", "apps", waypoint_ip).service_account("waypoint").build(),
        )),
    );
    let web =
        workload("web", "apps", m.server_ip).service_account("web").waypoint(waypoint_ip).build();
    put(&store_b, Address::Workload(Box::new(web)));
    assert_refused(m.connect(app).await).await;
    m.b.idle().await;
    assert_eq!(
        m.b.sample(
            "istio_tcp_connections_opened_total",
            &[
                ("response_flags", "DENY"),
                ("source_principal", "spiffe://cluster.local/ns/apps/sa/sleep")
            ]
        ),
        1
    );

    // The client's ztunnel learns of the waypoint too: it now sends there,
    // and there is no waypoint listening, so the connection fails at source.
    put(
        &m.store,
        Address::Workload(Box::new(
            workload("waypoint", "apps", waypoint_ip).service_account("waypoint").build(),
        )),
    );
    put(
        &m.store,
        Address::Workload(Box::new(
            workload("web", "apps", m.server_ip)
                .service_account("web")
                .waypoint(waypoint_ip)
                .build(),
        )),
    );
    assert_refused(m.connect(app).await).await;
    m.a.idle().await;
    assert_eq!(
        m.a.sample(
            "istio_tcp_connections_opened_total",
            &[("response_flags", "UF"), ("reporter", "source")]
        ),
        1
    );
}

#[tokio::test]
async fn removing_a_pod_closes_its_listeners_and_drains_its_connections() {
    let m = two_nodes(8).await;
    let app = echo_on(m.server_ip, 8080).await;
    let mut open = m.connect(app).await;
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    assert!(m.b.ztunnel.shared().connections.count() >= 1);
    assert!(m.b.ztunnel.remove_pod(&support::pod_uid("apps", "web")));
    // The listener is gone at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(SocketAddr::new(m.server_ip, 15008)).await.is_err());
    // The open connection is cut at the 2 s drain deadline.
    let read = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    m.b.idle().await;
}

#[tokio::test]
async fn connections_survive_certificate_rotation_and_new_ones_use_the_new_certificate() {
    let store = WorkloadStore::new();
    let ca = FakeCa::new();
    ca.lifetime_ms.store(1_600, Ordering::SeqCst);
    let (client_ip, server_ip) = (ip("127.21.9.1"), ip("127.21.9.2"));
    put(
        &store,
        Address::Workload(Box::new(
            workload("sleep", "apps", client_ip).service_account("sleep").build(),
        )),
    );
    put(
        &store,
        Address::Workload(Box::new(
            workload("web", "apps", server_ip).service_account("web").build(),
        )),
    );
    let a = Node::new(store.clone(), ca.clone());
    let b = Node::new(store.clone(), ca.clone());
    a.add_pod("sleep", "apps", "sleep", client_ip);
    b.add_pod("web", "apps", "web", server_ip);
    a.ready().await;
    b.ready().await;
    let app = echo_on(server_ip, 8080).await;
    let mut long_lived =
        a.redirects.connect(client_ip, SocketAddr::new(client_ip, 15001), app).await;
    let before = ca.issued.load(Ordering::SeqCst);
    // Keep traffic flowing across at least two rotations (refresh at ~0.8 s).
    for i in 0..25u8 {
        long_lived.write_all(&[i; 1000]).await.unwrap();
        let mut back = [0u8; 1000];
        long_lived.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [i; 1000]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ca.issued.load(Ordering::SeqCst) >= before + 2, "certificates were rotated");
    // A new connection works after rotation (pooled connections may be
    // reused; the server presents its newest certificate to new ones).
    let fresh = a.redirects.connect(client_ip, SocketAddr::new(client_ip, 15001), app).await;
    assert_eq!(round_trip(fresh, b"after rotation").await, b"after rotation");
}

#[tokio::test]
async fn an_unknown_destination_workload_is_refused_not_guessed() {
    // The client knows web; the server's ztunnel serves the pod but has no
    // workload for it yet, so it cannot know its policies.
    let (store_a, store_b) = (WorkloadStore::new(), WorkloadStore::new());
    let m = two_nodes_seeing(10, store_a, store_b.clone()).await;
    let app = echo_on(m.server_ip, 8080).await;
    store_b.remove(&support::uid("apps", "web"));
    assert_refused(m.connect(app).await).await;
    m.b.idle().await;
    assert_eq!(m.b.sample("istio_tcp_connections_opened_total", &[("response_flags", "DENY")]), 1);
}

#[tokio::test]
async fn the_pods_dns_proxy_answers_service_names() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let m = two_nodes(11).await;
    put(
        &m.store,
        Address::Service(Box::new(
            service("web", "apps", ip("10.96.21.11"), &[(80, 8080)]).build(),
        )),
    );
    let socket = tokio::net::UdpSocket::bind((m.client_ip, 0)).await.unwrap();
    let mut query = Message::query();
    query.metadata.id = 7;
    query.add_query(Query::query(
        Name::from_ascii("web.apps.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    socket.send_to(&query.to_vec().unwrap(), (m.client_ip, 15053)).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 7);
    let answers: Vec<_> = reply.answers.iter().map(|r| r.data.clone()).collect();
    assert!(
        matches!(answers.as_slice(), [RData::A(a)] if a.0.to_string() == "10.96.21.11"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn many_concurrent_connections_leave_nothing_behind() {
    let m = two_nodes(12).await;
    let app = echo_on(m.server_ip, 8080).await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let stream = m.connect(app).await;
        tasks.push(tokio::spawn(async move {
            let data = i.to_be_bytes().repeat(256);
            assert_eq!(round_trip(stream, &data).await, data);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    m.a.idle().await;
    m.b.idle().await;
    assert_eq!(
        m.b.sample("istio_tcp_connections_closed_total", &[("reporter", "destination")]),
        200
    );
}

#[tokio::test]
async fn an_application_that_is_not_listening_is_a_503_at_the_destination() {
    let m = two_nodes(13).await;
    // Nothing listens on web:8081.
    assert_refused(m.connect(SocketAddr::new(m.server_ip, 8081)).await).await;
    m.b.idle().await;
    assert_eq!(
        m.b.sample(
            "istio_tcp_connections_opened_total",
            &[("response_flags", "UF"), ("reporter", "destination")]
        ),
        1
    );
    assert_eq!(
        m.a.sample(
            "istio_tcp_connections_opened_total",
            &[("response_flags", "UF"), ("reporter", "source")]
        ),
        1
    );
}

#[tokio::test]
async fn bytes_sent_before_the_tunnel_opens_arrive_once_and_are_counted() {
    let m = two_nodes(14).await;
    let app = echo_on(m.server_ip, 8080).await;
    // Written before ztunnel accepts: they travel with the CONNECT.
    let stream = m.connect_having_sent(app, b"written early, ");
    let back = round_trip(stream, b"written later").await;
    assert_eq!(back, b"written early, written later");
    m.a.idle().await;
    m.b.idle().await;
    let sent = b"written early, written later".len() as u64;
    let client_side = [("reporter", "source")];
    assert_eq!(m.a.sample("istio_tcp_sent_bytes_total", &client_side), sent, "{}", m.a.metrics());
    assert_eq!(m.a.sample("istio_tcp_received_bytes_total", &client_side), sent);
    let server_side = [("reporter", "destination")];
    assert_eq!(m.b.sample("istio_tcp_received_bytes_total", &server_side), sent);
}

#[tokio::test]
async fn a_failed_tunnel_resets_its_client_whether_it_sent_or_not() {
    let m = two_nodes(15).await;
    // Nothing listens on web:8081: the destination answers 503. The client's
    // bytes were read for the tunnel, so it must see a reset, not an
    // orderly close it could take for an empty answer.
    let mut stream = m.connect_having_sent(SocketAddr::new(m.server_ip, 8081), b"GET / HTTP/1.1");
    let mut out = Vec::new();
    let err = stream.read_to_end(&mut out).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(out.is_empty());
    // A client that sent nothing (it waits for the server to speak first)
    // gets a reset too, not an orderly end it could take for a hang-up.
    let mut silent = m.connect(SocketAddr::new(m.server_ip, 8081)).await;
    let err = silent.read_to_end(&mut out).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// [`two_nodes`] plus `web-2`, a second pod of web's service account on
/// node b, whose echo address is returned; node b runs with `b_config`.
async fn two_pods_of_one_identity(
    net: u8,
    b_config: ztunnel::ProxyConfig,
) -> (TwoNodes, SocketAddr) {
    let store = WorkloadStore::new();
    let m = two_nodes_configured(net, store.clone(), store.clone(), b_config).await;
    let twin_ip = ip(&format!("127.21.{net}.3"));
    let twin = workload("web-2", "apps", twin_ip).service_account("web").node("node-b").build();
    put(&store, Address::Workload(Box::new(twin)));
    m.b.add_pod("web-2", "apps", "web", twin_ip);
    m.b.ready().await;
    (m, SocketAddr::new(twin_ip, 8080))
}

/// Echoes through web, then through web-2 (a new HBONE connection each);
/// returns the client pod's pool.
async fn reach_both_pods(m: &TwoNodes, twin: SocketAddr) -> hbone::Pool {
    let first = echo_on(m.server_ip, 8080).await;
    let second = echo_on(twin.ip(), twin.port()).await;
    assert_eq!(round_trip(m.connect(first).await, b"one").await, b"one");
    assert_eq!(round_trip(m.connect(second).await, b"two").await, b"two");
    m.a.ztunnel.pod_pool(&support::pod_uid("apps", "sleep")).unwrap()
}

#[tokio::test]
async fn a_new_pod_on_a_known_node_resumes_the_tls_session_and_keeps_identities() {
    let (m, twin) = two_pods_of_one_identity(16, support::config()).await;
    let pool = reach_both_pods(&m, twin).await;
    assert_eq!(pool.connections_opened(), 2, "one HBONE connection per pod");
    assert_eq!(
        pool.sessions_resumed(),
        1,
        "the second pod's connection resumed the first's session"
    );
    m.b.idle().await;
    let resumed_side = [
        ("reporter", "destination"),
        ("destination_workload", "web-2"),
        ("source_principal", "spiffe://cluster.local/ns/apps/sa/sleep"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(
        m.b.sample("istio_tcp_connections_opened_total", &resumed_side),
        1,
        "{}",
        m.b.metrics()
    );
}

#[tokio::test]
async fn a_node_that_issues_no_tickets_gets_full_handshakes() {
    let config = ztunnel::ProxyConfig { session_ticket_lifetime: None, ..support::config() };
    let (m, twin) = two_pods_of_one_identity(17, config).await;
    let pool = reach_both_pods(&m, twin).await;
    assert_eq!((pool.connections_opened(), pool.sessions_resumed()), (2, 0));
}
