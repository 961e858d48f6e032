//! A tunnel cut mid-transfer (a proxy killed: its sockets closed with no TLS
//! close_notify) reaches the application as a reset, never as a clean end
//! that would make a truncated upload look complete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use hbone::{ConnectRequest, Pool, PoolConfig, TcpDialer};
use testkit::{ForwardingHandler, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn a_cut_tunnel_reaches_both_ends_as_a_reset() {
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("ns-a", "client"));
    let server_id = ca.identity("ns-b", "server");
    let hbone_addr = testkit::spawn_hbone(&ca.issue(&server_id), ForwardingHandler::new()).await;
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();

    // What carries the HBONE connection, and dies: a plain TCP relay.
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let relay_task = tokio::spawn(async move {
        let (mut inbound, _) = relay.accept().await.unwrap();
        let mut outbound = TcpStream::connect(hbone_addr).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });

    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let request = ConnectRequest::new(client, relay_addr, vec![server_id], app_addr);
    let mut tunnel = pool.connect(&request).await.unwrap();
    let (mut application, _) = app.accept().await.unwrap();
    tunnel.write_all(b"the first half of an upload").await.unwrap();
    let mut first = [0u8; 27];
    application.read_exact(&mut first).await.unwrap();

    relay_task.abort();
    let _ = relay_task.await;

    let mut rest = Vec::new();
    let err = application.read_to_end(&mut rest).await.expect_err("a clean end after a cut");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let err =
        tunnel.read_to_end(&mut rest).await.expect_err("the client's end is not clean either");
    assert!(rest.is_empty());
    drop(err);
}
