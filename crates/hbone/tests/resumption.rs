//! TLS session resumption between pool and server: when a new connection
//! resumes, and every case where it must not.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hbone::tls::ServerConfigs;
use hbone::{ConnectRequest, H2Settings, H2Stream, HboneServer, Pool, PoolConfig, TcpDialer};
use mesh_core::Identity;
use rustls::ServerConfig;
use testkit::{ForwardingHandler, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LIFETIME: Duration = Duration::from_secs(600);

/// One connection per tunnel, so every tunnel shows a new handshake.
fn pool() -> Pool {
    Pool::new(
        PoolConfig { max_streams_per_connection: 1, ..PoolConfig::default() },
        Arc::new(TcpDialer),
    )
}

/// An HBONE server on `ip` (any port) with `tls`; returns its address.
async fn serve(
    ip: &str,
    tls: Arc<ServerConfig>,
    handler: Arc<ForwardingHandler>,
) -> (SocketAddr, Arc<HboneServer<ForwardingHandler>>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(HboneServer::new(tls, handler, H2Settings::default()));
    tokio::spawn(server.clone().run(listener, std::future::pending()));
    (addr, server)
}

/// Opens a tunnel to the echo server and checks one byte goes round: the
/// client has then also read the server's session ticket.
async fn tunnel(pool: &Pool, request: &ConnectRequest) -> H2Stream {
    let mut stream = pool.connect(request).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut back = [0u8; 1];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"x");
    stream
}

struct Mesh {
    ca: TestCa,
    server_id: Identity,
    echo: SocketAddr,
    handler: Arc<ForwardingHandler>,
}

impl Mesh {
    async fn new() -> Self {
        let ca = TestCa::new("cluster.local");
        let server_id = ca.identity("ns-b", "server");
        Self { ca, server_id, echo: testkit::spawn_echo().await, handler: ForwardingHandler::new() }
    }

    fn resuming_config(&self) -> Arc<ServerConfig> {
        ServerConfigs::new(Some(LIFETIME)).get(&self.ca.issue(&self.server_id), &[]).unwrap()
    }

    fn request(&self, client: &hbone::WorkloadCertificate, hbone: SocketAddr) -> ConnectRequest {
        ConnectRequest::new(client.clone(), hbone, vec![self.server_id.clone()], self.echo)
    }
}

#[tokio::test]
async fn a_new_connection_to_the_same_server_resumes_and_keeps_the_identities() {
    let m = Mesh::new().await;
    let client_id = m.ca.identity("ns-a", "client");
    let client = m.ca.issue(&client_id);
    let (addr, _server) = serve("127.0.0.1", m.resuming_config(), m.handler.clone()).await;
    let pool = pool();
    let request = m.request(&client, addr);
    let _first = tunnel(&pool, &request).await;
    let _second = tunnel(&pool, &request).await;
    let _third = tunnel(&pool, &request).await;
    assert_eq!(pool.connections_opened(), 3);
    assert_eq!(pool.sessions_resumed(), 2, "every connection after the first resumes");
    let seen = m.handler.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|c| c.peer_identity == client_id),
        "the server knows the client on resumed connections too: {seen:?}"
    );
}

/// Two tunnels from `pool` to a server with `tls`, one after the other;
/// how many of their connections resumed a session.
async fn resumed_in_two_tunnels(m: &Mesh, tls: Arc<ServerConfig>, pool: Pool) -> u64 {
    let client = m.ca.issue(&m.ca.identity("ns-a", "client"));
    let (addr, _server) = serve("127.0.0.1", tls, m.handler.clone()).await;
    let _first = tunnel(&pool, &m.request(&client, addr)).await;
    let _second = tunnel(&pool, &m.request(&client, addr)).await;
    assert_eq!(pool.connections_opened(), 2);
    pool.sessions_resumed()
}

#[tokio::test]
async fn servers_without_tickets_do_full_handshakes() {
    let m = Mesh::new().await;
    let plain = ServerConfigs::new(None).get(&m.ca.issue(&m.server_id), &[]).unwrap();
    assert_eq!(resumed_in_two_tunnels(&m, plain, pool()).await, 0);
}

#[tokio::test]
async fn a_pool_told_not_to_resume_does_full_handshakes() {
    let m = Mesh::new().await;
    let config = PoolConfig {
        max_streams_per_connection: 1,
        resume_sessions: false,
        ..PoolConfig::default()
    };
    let not_resuming = Pool::new(config, Arc::new(TcpDialer));
    assert_eq!(resumed_in_two_tunnels(&m, m.resuming_config(), not_resuming).await, 0);
    // The same with a resuming pool: what the two cases above take away.
    assert_eq!(resumed_in_two_tunnels(&m, m.resuming_config(), pool()).await, 1);
}

#[tokio::test]
async fn sessions_resume_across_the_addresses_of_one_peer_proxy_only_when_named() {
    let m = Mesh::new().await;
    let client = m.ca.issue(&m.ca.identity("ns-a", "client"));
    // One proxy serving two pods of one identity: one shared configuration.
    let shared = m.resuming_config();
    let (pod_1, _s1) = serve("127.0.0.1", shared.clone(), m.handler.clone()).await;
    let (pod_2, _s2) = serve("127.0.0.2", shared.clone(), m.handler.clone()).await;
    let (pod_3, _s3) = serve("127.0.0.3", shared, m.handler.clone()).await;
    let named =
        |hbone| ConnectRequest { peer_proxy: Some("node-b".into()), ..m.request(&client, hbone) };
    let pool = pool();
    let _a = tunnel(&pool, &named(pod_1)).await;
    let _b = tunnel(&pool, &named(pod_2)).await;
    assert_eq!(pool.sessions_resumed(), 1, "pod 2 resumed pod 1's session");
    let _c = tunnel(&pool, &m.request(&client, pod_3)).await;
    assert_eq!(pool.sessions_resumed(), 1, "unnamed, pod 3 is a server of its own");
}

#[tokio::test]
async fn a_server_with_other_ticket_keys_falls_back_to_a_full_handshake() {
    let m = Mesh::new().await;
    let client = m.ca.issue(&m.ca.identity("ns-a", "client"));
    // Same identity and name, but two proxies: neither reads the other's tickets.
    let (node_1, _s1) = serve("127.0.0.1", m.resuming_config(), m.handler.clone()).await;
    let (node_2, _s2) = serve("127.0.0.2", m.resuming_config(), m.handler.clone()).await;
    let named = |hbone| ConnectRequest {
        peer_proxy: Some("same-name".into()),
        ..m.request(&client, hbone)
    };
    let pool = pool();
    let _a = tunnel(&pool, &named(node_1)).await;
    let _b = tunnel(&pool, &named(node_2)).await;
    assert_eq!(pool.connections_opened(), 2);
    assert_eq!(pool.sessions_resumed(), 0);
    // node 2's own ticket works with node 2.
    let _c = tunnel(&pool, &named(node_2)).await;
    assert_eq!(pool.sessions_resumed(), 1);
}

#[tokio::test]
async fn a_session_is_never_offered_where_other_identities_are_expected() {
    let m = Mesh::new().await;
    let client = m.ca.issue(&m.ca.identity("ns-a", "client"));
    let (addr, _server) = serve("127.0.0.1", m.resuming_config(), m.handler.clone()).await;
    let pool = pool();
    let _a = tunnel(&pool, &m.request(&client, addr)).await;
    // The same server, but this key would also accept another identity: its
    // configuration (and session store) is another one.
    let wider = ConnectRequest {
        expected_identities: vec![m.server_id.clone(), m.ca.identity("ns-c", "other")],
        ..m.request(&client, addr)
    };
    let _b = tunnel(&pool, &wider).await;
    assert_eq!(pool.sessions_resumed(), 0);
    let _c = tunnel(&pool, &wider).await;
    assert_eq!(pool.sessions_resumed(), 1, "within its own scope it resumes");
}

#[tokio::test]
async fn no_session_survives_a_certificate_rotation_on_either_side() {
    let m = Mesh::new().await;
    let client_id = m.ca.identity("ns-a", "client");
    let client = m.ca.issue(&client_id);
    let configs = ServerConfigs::new(Some(LIFETIME));
    let (addr, server) =
        serve("127.0.0.1", configs.get(&m.ca.issue(&m.server_id), &[]).unwrap(), m.handler.clone())
            .await;
    let pool = pool();
    let _a = tunnel(&pool, &m.request(&client, addr)).await;
    // The server rotates: its new configuration has new ticket keys.
    server.set_tls_config(configs.get(&m.ca.issue(&m.server_id), &[]).unwrap());
    let _b = tunnel(&pool, &m.request(&client, addr)).await;
    assert_eq!(pool.sessions_resumed(), 0, "the old ticket is unreadable");
    // The client rotates: a new configuration with an empty store.
    let rotated = m.ca.issue(&client_id);
    let _c = tunnel(&pool, &m.request(&rotated, addr)).await;
    assert_eq!(pool.sessions_resumed(), 0, "the rotated client has no session");
    let _d = tunnel(&pool, &m.request(&rotated, addr)).await;
    assert_eq!(pool.sessions_resumed(), 1);
}
