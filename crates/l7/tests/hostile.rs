//! Hostile clients on the engine's downstream side: request smuggling,
//! oversized heads, malformed requests and slow heads get a clear 4xx or
//! a closed connection, and a counter; never a hang, and never a smuggled
//! request forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use l7::balance::Endpoint;
use l7::clients::Connector;
use l7::metrics::Peer;
use l7::policies::Applicable;
use l7::{Destinations, Downstream, Engine, EngineSettings, Protocol, ServiceRoutes, Target};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Counts what reaches the upstream side; nothing should.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicU32>);

impl Connector for Counting {
    type Io = DuplexStream;

    async fn connect(
        &self,
        _: &Endpoint,
        _: std::net::SocketAddr,
    ) -> std::io::Result<DuplexStream> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(std::io::Error::other("no upstream in this test"))
    }
}

struct Nothing;

impl Destinations for Nothing {
    fn routes(&self, _: &str) -> Option<Arc<ServiceRoutes>> {
        None
    }

    fn endpoints(&self, _: &str, _: u16, _: Option<&[String]>) -> Vec<Endpoint> {
        vec![Endpoint { uid: "w".into(), address: "10.0.0.1:80".parse().unwrap() }]
    }

    fn describe(&self, _: &str) -> Peer {
        Peer::default()
    }

    fn authorization(&self, _: &Target) -> Arc<Applicable> {
        Arc::default()
    }
}

/// Sends `bytes`, returns what came back before the engine closed.
async fn exchange(bytes: &[u8], settings: EngineSettings) -> (String, u32, String) {
    let upstream = Counting::default();
    let mut registry = Registry::default();
    let engine = Engine::new(upstream.clone(), Nothing, settings, &mut registry);
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let downstream = Downstream {
        source: "10.0.0.9:1".parse().unwrap(),
        peer: Peer::default(),
        target: Target::Service { key: "apps/web".into(), port: 80 },
        destination: "10.0.0.2:80".parse().unwrap(),
    };
    let served = tokio::spawn(engine.serve(server, downstream, Protocol::Http));
    client.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("the engine must answer or close, not hang")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    (String::from_utf8_lossy(&answer).into_owned(), upstream.0.load(Ordering::Relaxed), metrics)
}

#[tokio::test]
async fn conflicting_lengths_never_smuggle_a_second_request() {
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3, hyper's
    // parser), and the connection is closed after the answer, so the
    // bytes after the chunked body are never read as a request.
    let smuggle = b"POST / HTTP/1.1\r\nhost: web\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nhost: web\r\n\r\n";
    let (answer, upstream, _) = exchange(smuggle, EngineSettings::default()).await;
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closes: {answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(upstream, 1, "only the first request went upstream");
    // Two different lengths: refused outright.
    let double =
        b"POST / HTTP/1.1\r\nhost: web\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde";
    let (answer, upstream, _) = exchange(double, EngineSettings::default()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(upstream, 0);
}

#[tokio::test]
async fn oversized_heads_get_431_and_a_count() {
    let big = format!("GET / HTTP/1.1\r\nhost: web\r\nx-big: {}\r\n\r\n", "a".repeat(100_000));
    let (answer, upstream, metrics) = exchange(big.as_bytes(), EngineSettings::default()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(upstream, 0);
    assert!(
        metrics.contains("mesh_l7_downstream_errors_total{kind=\"header_too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn garbage_gets_400() {
    let (answer, upstream, metrics) =
        exchange(b"GET /\x01 HTTP/1.1\r\n\r\n", EngineSettings::default()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(upstream, 0);
    assert!(metrics.contains("kind=\"malformed\""), "{metrics}");
}

#[tokio::test]
async fn a_slow_head_is_cut_off() {
    let settings =
        EngineSettings { header_read_timeout: Duration::from_millis(200), ..Default::default() };
    // Half a request, then silence: the engine must not wait forever.
    let (answer, upstream, metrics) = exchange(b"GET / HTTP/1.1\r\nhost: w", settings).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(upstream, 0);
    assert!(metrics.contains("kind=\"header_timeout\""), "{metrics}");
}

/// An upstream that never answers: every request is still in flight when
/// its client cancels it.
struct Hanging;

impl Connector for Hanging {
    type Io = DuplexStream;

    async fn connect(
        &self,
        _: &Endpoint,
        _: std::net::SocketAddr,
    ) -> std::io::Result<DuplexStream> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_is_cut_off() {
    let mut registry = Registry::default();
    let engine = Engine::new(Hanging, Nothing, EngineSettings::default(), &mut registry);
    let (client, server) = tokio::io::duplex(1 << 20);
    let downstream = Downstream {
        source: "10.0.0.9:1".parse().unwrap(),
        peer: Peer::default(),
        target: Target::Service { key: "apps/web".into(), port: 80 },
        destination: "10.0.0.2:80".parse().unwrap(),
    };
    let served = tokio::spawn(engine.serve(server, downstream, Protocol::Http2));
    let (mut h2, connection) = h2::client::handshake(client).await.unwrap();
    let driver = tokio::spawn(connection);
    // CVE-2023-44487: open a stream and reset it at once, over and over.
    let mut sent = 0;
    for _ in 0..10_000 {
        let Ok(ready) = h2.clone().ready().await else { break };
        h2 = ready;
        let request = http::Request::builder().uri("http://web/").body(()).unwrap();
        let Ok((_, mut stream)) = h2.send_request(request, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        tokio::task::yield_now().await;
    }
    assert!(sent < 10_000, "the server never stopped the flood");
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the connection ends")
        .unwrap();
    let _ = driver.await;
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains("mesh_l7_downstream_errors_total{kind=\"reset_flood\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn many_answered_http2_requests_keep_their_connection() {
    let upstream = Counting::default();
    let mut registry = Registry::default();
    let engine = Engine::new(upstream.clone(), Nothing, EngineSettings::default(), &mut registry);
    let (client, server) = tokio::io::duplex(1 << 20);
    let downstream = Downstream {
        source: "10.0.0.9:1".parse().unwrap(),
        peer: Peer::default(),
        target: Target::Service { key: "apps/web".into(), port: 80 },
        destination: "10.0.0.2:80".parse().unwrap(),
    };
    tokio::spawn(engine.serve(server, downstream, Protocol::Http2));
    let (mut h2, connection) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(connection);
    for i in 0..2_000 {
        h2 = h2.ready().await.unwrap_or_else(|e| panic!("request {i}: connection closed: {e}"));
        let request = http::Request::builder().uri("http://web/").body(()).unwrap();
        let (response, _) = h2.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 503, "no upstream: 503, answered");
    }
    assert_eq!(upstream.0.load(Ordering::Relaxed), 2_000);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(!metrics.contains("reset_flood"), "{metrics}");
}
