//! Hostile probes against the node proxy, kept as tests: what a pod (or
//! any authenticated peer) can send that must not hurt the node. Each test
//! uses its own 127.23.<n>.0/24.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use mesh_core::Address;
use proxy_core::store::WorkloadStore;
use support::{FakeCa, Node, assert_refused, echo_on, ip, put, round_trip};
use testkit::model::workload;

struct Pair {
    a: Node,
    b: Node,
    client_ip: std::net::IpAddr,
    server_ip: std::net::IpAddr,
}

/// `sleep` on node a, `web` on node b, both in the mesh.
async fn pair(net: u8) -> Pair {
    let store = WorkloadStore::new();
    let ca = FakeCa::new();
    let client_ip = ip(&format!("127.23.{net}.1"));
    let server_ip = ip(&format!("127.23.{net}.2"));
    put(
        &store,
        Address::Workload(Box::new(
            workload("sleep", "apps", client_ip).service_account("sleep").build(),
        )),
    );
    put(
        &store,
        Address::Workload(Box::new(
            workload("web", "apps", server_ip).service_account("web").node("node-b").build(),
        )),
    );
    let a = Node::new(store.clone(), ca.clone());
    let b = Node::new(store, ca);
    a.add_pod("sleep", "apps", "sleep", client_ip);
    b.add_pod("web", "apps", "web", server_ip);
    a.ready().await;
    b.ready().await;
    Pair { a, b, client_ip, server_ip }
}

impl Pair {
    async fn connect(&self, dst: SocketAddr) -> tokio::net::TcpStream {
        let capture = SocketAddr::new(self.client_ip, 15001);
        self.a.redirects.connect(self.client_ip, capture, dst).await
    }

    fn refused_as_own_port(&self) -> u64 {
        self.b.sample(
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination"), ("response_flags", "NR")],
        )
    }
}

#[tokio::test]
async fn tunnels_to_ztunnels_own_ports_are_refused_not_dialled() {
    let m = pair(1).await;
    for port in [15006, 15008, 15001, 15053] {
        let before = m.refused_as_own_port();
        assert_refused(m.connect(SocketAddr::new(m.server_ip, port)).await).await;
        assert_eq!(m.refused_as_own_port(), before + 1, "port {port}: {}", m.b.metrics());
    }
    // The pod still serves its application afterwards.
    let app = echo_on(m.server_ip, 8080).await;
    assert_eq!(round_trip(m.connect(app).await, b"still here").await, b"still here");
    m.a.idle().await;
    m.b.idle().await;
}

#[tokio::test]
async fn plaintext_straight_to_the_inbound_capture_port_is_refused() {
    let m = pair(2).await;
    // Not redirected: its original destination is the listener itself.
    let own = SocketAddr::new(m.server_ip, 15006);
    let stream = m.b.redirects.connect(ip("127.23.2.9"), own, own).await;
    assert_refused(stream).await;
    assert_eq!(m.refused_as_own_port(), 1, "{}", m.b.metrics());
    m.b.idle().await;
}
