//! Connections that open TCP and never speak TLS: a server holds at most
//! `max_pending_handshakes` of them, closes the rest at once and counts
//! them, and cuts the held ones off at the handshake timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hbone::{H2Settings, HboneServer};
use testkit::{ForwardingHandler, TestCa};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Whether the server closed `tcp` within `wait`.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(wait, tcp.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn idle_connections_past_the_handshake_limit_are_closed_at_once() {
    let ca = TestCa::new("cluster.local");
    let cert = ca.issue(&ca.identity("b", "server"));
    let settings = H2Settings {
        max_pending_handshakes: 2,
        handshake_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let tls = hbone::tls::server_config(&cert, &[]).unwrap();
    let server = Arc::new(HboneServer::new(tls, ForwardingHandler::new(), settings));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().run(listener, std::future::pending()));

    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(1)).await, "past the limit: closed");
    assert_eq!(server.handshakes_refused(), 1);
    for tcp in &mut held {
        assert!(!closed_within(tcp, Duration::from_millis(200)).await, "within the limit: held");
    }
    // The held ones end at the handshake timeout, freeing their places.
    for tcp in &mut held {
        assert!(closed_within(tcp, Duration::from_secs(5)).await, "cut off at the timeout");
    }
    let mut later = TcpStream::connect(addr).await.unwrap();
    assert!(!closed_within(&mut later, Duration::from_millis(300)).await, "a place is free again");
    assert_eq!(server.handshakes_refused(), 1);
}
