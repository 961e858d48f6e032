//! Tunnels end to end on loopback: bytes, half-close, pooling, statuses.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::{
    ConnectError, ConnectRequest, H2Stream, Pool, PoolConfig, TcpDialer, WorkloadCertificate,
};
use mesh_core::Identity;
use testkit::{ForwardingHandler, PatternSource, Sha256Stream, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    ca: TestCa,
    client: WorkloadCertificate,
    server_id: Identity,
    handler: Arc<ForwardingHandler>,
    hbone_addr: SocketAddr,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_handler(ForwardingHandler::new()).await
    }

    async fn with_handler(handler: Arc<ForwardingHandler>) -> Self {
        let ca = TestCa::new("cluster.local");
        let client = ca.issue(&ca.identity("ns-a", "client"));
        let server_id = ca.identity("ns-b", "server");
        let hbone_addr = testkit::spawn_hbone(&ca.issue(&server_id), handler.clone()).await;
        Self { ca, client, server_id, handler, hbone_addr }
    }

    fn request(&self, target: SocketAddr) -> ConnectRequest {
        ConnectRequest::new(
            self.client.clone(),
            self.hbone_addr,
            vec![self.server_id.clone()],
            target,
        )
    }

    /// Distinct HBONE connections the server has seen streams on.
    fn server_connections(&self) -> usize {
        self.handler.seen().iter().map(|c| c.peer_addr).collect::<HashSet<_>>().len()
    }
}

fn pool() -> Pool {
    Pool::new(PoolConfig::default(), Arc::new(TcpDialer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_arrives_byte_exact() {
    const TOTAL: usize = 1 << 30;
    let f = Fixture::new().await;
    let sink = testkit::spawn_hash_sink().await;
    let pool = pool();
    let mut stream = pool.connect(&f.request(sink)).await.unwrap();
    let mut source = PatternSource::new(0x5eed);
    let mut sent = Sha256Stream::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = TOTAL;
    while left > 0 {
        let n = left.min(buf.len());
        source.fill(&mut buf[..n]);
        sent.update(&buf[..n]);
        stream.write_all(&buf[..n]).await.unwrap();
        left -= n;
    }
    // Half-close: the sink answers only once it has seen the end.
    stream.shutdown().await.unwrap();
    let mut digest = String::new();
    stream.read_to_string(&mut digest).await.unwrap();
    assert_eq!(digest, sent.hex(), "the server received different bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_share_one_connection() {
    const STREAMS: usize = 1000;
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let config = PoolConfig { max_streams_per_connection: STREAMS, ..Default::default() };
    let pool = Pool::new(config, Arc::new(TcpDialer));
    let all_open = Arc::new(tokio::sync::Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let pool = pool.clone();
        let request = f.request(echo);
        let all_open = all_open.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = pool.connect(&request).await.unwrap();
            let message = format!("stream {i} says hello");
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(back, message.as_bytes());
            // Hold every stream open until all are: they are concurrent.
            all_open.wait().await;
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(pool.connections_opened(), 1);
    assert_eq!(f.server_connections(), 1);
    assert_eq!(f.handler.seen().len(), STREAMS);
}

#[tokio::test]
async fn streams_beyond_the_per_connection_limit_open_another_connection() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let config = PoolConfig { max_streams_per_connection: 2, ..Default::default() };
    let pool = Pool::new(config, Arc::new(TcpDialer));
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(pool.connect(&f.request(echo)).await.unwrap());
    }
    assert_eq!(pool.connections_opened(), 3);
    assert_eq!(pool.connection_count(), 3);
    drop(open);
    // Freed slots are reused.
    let _again = pool.connect(&f.request(echo)).await.unwrap();
    assert_eq!(pool.connections_opened(), 3);
}

#[tokio::test]
async fn a_server_that_speaks_first_and_a_client_that_half_closes() {
    let f = Fixture::new().await;
    let server = testkit::spawn_speak_first(b"220 hello\r\n").await;
    let pool = pool();
    let mut stream = pool.connect(&f.request(server)).await.unwrap();
    // Read before writing anything: the server talks first.
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    stream.write_all(b"0123456789").await.unwrap();
    // Close our side, then keep reading: the reply comes after our FIN.
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "read 10");
}

#[tokio::test]
async fn a_server_that_closes_first_still_receives() {
    let f = Fixture::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let received = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"bye").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        got
    });
    let pool = pool();
    let mut stream = pool.connect(&f.request(server)).await.unwrap();
    let mut first = Vec::new();
    stream.read_to_end(&mut first).await.unwrap();
    assert_eq!(first, b"bye");
    // The server closed its side; ours is still open.
    stream.write_all(b"after your FIN").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(received.await.unwrap(), b"after your FIN");
}

#[tokio::test]
async fn the_pool_reuses_connections_and_never_mixes_identities() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let pool = pool();
    let other_client = f.ca.issue(&f.ca.identity("ns-c", "other-client"));

    let first = pool.connect(&f.request(echo)).await.unwrap();
    drop(first);
    let _second = pool.connect(&f.request(echo)).await.unwrap();
    assert_eq!(pool.connections_opened(), 1, "same key: connection reused");

    let mut as_other = f.request(echo);
    as_other.source = other_client.clone();
    let _third = pool.connect(&as_other).await.unwrap();
    assert_eq!(pool.connections_opened(), 2, "another source identity: another connection");

    let mut wider = f.request(echo);
    wider.expected_identities.push(f.ca.identity("ns-b", "alias"));
    let _fourth = pool.connect(&wider).await.unwrap();
    assert_eq!(pool.connections_opened(), 3, "another destination set: another connection");

    // The server saw each stream arrive with the identity that opened it.
    let seen = f.handler.seen();
    assert_eq!(seen.len(), 4);
    let ids: Vec<String> =
        seen.iter().map(|c| c.peer_identity.service_account().to_string()).collect();
    assert_eq!(ids, ["client", "client", "other-client", "client"]);
    // Streams from different identities never shared a connection.
    let by_conn: std::collections::HashMap<SocketAddr, HashSet<&Identity>> =
        seen.iter().fold(Default::default(), |mut m, c| {
            m.entry(c.peer_addr).or_default().insert(&c.peer_identity);
            m
        });
    assert!(by_conn.values().all(|ids| ids.len() == 1), "{by_conn:?}");
}

#[tokio::test]
async fn headers_reach_the_handler() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let mut request = f.request(echo);
    request.forwarded_for = Some("10.1.2.3:4567".parse().unwrap());
    request.baggage = Some("k8s.namespace.name=ns-a".into());
    request.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let _stream = pool().connect(&request).await.unwrap();
    let seen = f.handler.seen();
    let got = &seen[0];
    assert_eq!(got.target, echo);
    assert_eq!(got.peer_identity, f.client.identity().clone());
    let fwd = got.forwarded_for.unwrap();
    assert_eq!((fwd.ip.to_string(), fwd.port), ("10.1.2.3".to_string(), Some(4567)));
    assert_eq!(got.baggage.as_deref(), Some("k8s.namespace.name=ns-a"));
    assert_eq!(got.traceparent, request.traceparent);
}

#[tokio::test]
async fn denied_and_unavailable_targets_get_401_and_503() {
    let f = Fixture::with_handler(ForwardingHandler::denying_ports(&[7])).await;
    let pool = pool();
    let denied: SocketAddr = "127.0.0.1:7".parse().unwrap();
    let err = pool.connect(&f.request(denied)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Denied { target, .. } if target == denied), "{err:?}");

    // A port nothing listens on: bind, learn the port, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = pool.connect(&f.request(closed)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Unavailable { .. }), "{err:?}");
    // Refusals do not cost the pooled connection.
    assert_eq!(pool.connections_opened(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let config = PoolConfig { idle_timeout: Duration::from_millis(200), ..Default::default() };
    let pool = Pool::new(config, Arc::new(TcpDialer));
    let stream = pool.connect(&f.request(echo)).await.unwrap();
    assert_eq!(pool.connection_count(), 1);
    // Busy connections stay, however long.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pool.connection_count(), 1, "a connection with an open stream is not idle");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.connection_count() != 0 {
        assert!(Instant::now() < deadline, "idle connection was never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next stream dials afresh.
    let _stream = pool.connect(&f.request(echo)).await.unwrap();
    assert_eq!(pool.connections_opened(), 2);
}

/// Opens a raw HTTP/2 connection to the fixture's server, for requests the
/// pool would never send.
async fn raw_h2(f: &Fixture) -> h2::client::SendRequest<bytes::Bytes> {
    let config = hbone::tls::client_config(&f.client, std::slice::from_ref(&f.server_id)).unwrap();
    let tcp = tokio::net::TcpStream::connect(f.hbone_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(f.hbone_addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn status_of(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
) -> u16 {
    let mut ready = send.clone().ready().await.unwrap();
    let (response, _body) = ready.send_request(req, false).unwrap();
    response.await.unwrap().status().as_u16()
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let mut send = raw_h2(&f).await;

    let get = http::Request::get(format!("https://{echo}/")).body(()).unwrap();
    assert_eq!(status_of(&mut send, get).await, 400, "non-CONNECT methods");

    for authority in ["example.com:80", "127.0.0.1:0"] {
        let connect =
            http::Request::builder().method(http::Method::CONNECT).uri(authority).body(()).unwrap();
        assert_eq!(status_of(&mut send, connect).await, 400, "authority {authority}");
    }

    let bad_forwarded = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(echo.to_string())
        .header("forwarded", "for=unknown")
        .body(())
        .unwrap();
    assert_eq!(status_of(&mut send, bad_forwarded).await, 400, "bad Forwarded header");

    let good = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(echo.to_string())
        .body(())
        .unwrap();
    assert_eq!(status_of(&mut send, good).await, 200, "the same connection still works");
    // Only the good request reached the handler.
    assert_eq!(f.handler.seen().len(), 1);
}

#[tokio::test]
async fn streams_are_independent_of_each_other() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let pool = pool();
    let mut a: H2Stream = pool.connect(&f.request(echo)).await.unwrap();
    let mut b: H2Stream = pool.connect(&f.request(echo)).await.unwrap();
    a.write_all(b"aaaa").await.unwrap();
    b.write_all(b"bb").await.unwrap();
    drop(a); // resets stream a; b must not notice
    let mut got = [0u8; 2];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"bb");
    b.write_all(b"cc").await.unwrap();
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"cc");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("ns-a", "client"));
    let server_id = ca.identity("ns-b", "server");
    let server_cert = ca.issue(&server_id);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that answers one CONNECT and then freezes: it keeps the
    // socket open but never reads again, so pings go unanswered.
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = hbone::tls::server_config(&server_cert, &[]).unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls)).accept(tcp).await.unwrap();
        let mut conn = h2::server::handshake(tls).await.unwrap();
        let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
        let _send = respond.send_response(http::Response::new(()), false).unwrap();
        // Flush the response, then stop polling the connection for good.
        let _ = tokio::time::timeout(Duration::from_millis(100), conn.accept()).await;
        std::future::pending::<()>().await;
        drop(conn);
    });
    let h2 = hbone::H2Settings {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let config = PoolConfig { idle_timeout: Duration::from_secs(3600), h2, ..Default::default() };
    let pool = Pool::new(config, Arc::new(TcpDialer));
    let request =
        ConnectRequest::new(client, addr, vec![server_id], "127.0.0.1:9".parse().unwrap());
    let mut stream = pool.connect(&request).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.connection_count() != 0 {
        assert!(Instant::now() < deadline, "unresponsive peer was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream on the dead connection fails instead of hanging.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap();
    assert!(read.is_err() || read.is_ok_and(|n| n == 0));
}

#[tokio::test]
async fn dropping_the_pool_closes_idle_connections_and_spares_busy_streams() {
    let f = Fixture::new().await;
    let echo = testkit::spawn_echo().await;
    let pool = pool();
    let idle = pool.connect(&f.request(echo)).await.unwrap();
    drop(idle);
    let mut other = f.request(echo);
    other.source = f.ca.issue(&f.ca.identity("ns-c", "busy"));
    let mut busy = pool.connect(&other).await.unwrap();
    drop(pool);
    // The busy stream keeps working after its pool is gone.
    busy.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    busy.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");
    busy.shutdown().await.unwrap();
    let mut rest = Vec::new();
    busy.read_to_end(&mut rest).await.unwrap();
    drop(busy);
    // Both connections go away promptly rather than after the idle timeout
    // (60 s): the server sees them end.
    let seen = f.handler.seen();
    assert_eq!(seen.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    for conn in seen.iter().map(|c| c.peer_addr) {
        loop {
            let open = std::process::Command::new("ss")
                .args(["-Htn", "state", "established", "src", &conn.to_string()])
                .output()
                .map(|o| !o.stdout.is_empty())
                .expect("`ss` from iproute2 is needed to watch sockets");
            if !open {
                break;
            }
            assert!(Instant::now() < deadline, "connection from {conn} still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
