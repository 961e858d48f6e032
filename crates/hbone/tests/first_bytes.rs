//! A tunnel's first bytes sent with its CONNECT: they leave before the
//! server's answer, arrive once and in order, and are replayed on another
//! connection only when the server said it never processed the stream.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hbone::{ConnectError, ConnectRequest, Pool, PoolConfig, TcpDialer, WorkloadCertificate};
use mesh_core::Identity;
use testkit::{ForwardingHandler, TestCa};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Long enough for any honest run; a test that waits this long failed.
const PATIENCE: Duration = Duration::from_secs(10);

struct Certs {
    client: WorkloadCertificate,
    server: WorkloadCertificate,
    server_id: Identity,
}

fn certs() -> Certs {
    let ca = TestCa::new("cluster.local");
    let server_id = ca.identity("ns-b", "server");
    Certs {
        client: ca.issue(&ca.identity("ns-a", "client")),
        server: ca.issue(&server_id),
        server_id,
    }
}

fn request(certs: &Certs, hbone_addr: SocketAddr, target: SocketAddr) -> ConnectRequest {
    ConnectRequest::new(certs.client.clone(), hbone_addr, vec![certs.server_id.clone()], target)
}

fn pool() -> Pool {
    Pool::new(PoolConfig::default(), Arc::new(TcpDialer))
}

fn acceptor(certs: &Certs) -> TlsAcceptor {
    TlsAcceptor::from(Arc::new(hbone::tls::server_config(&certs.server, &[]).unwrap()))
}

#[tokio::test]
async fn first_bytes_leave_before_the_answer() {
    // A server that reads the stream's first DATA *before* it answers: a
    // client that waited for the 200 would wait forever here.
    let certs = certs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(&certs);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut conn = h2::server::handshake(tls).await.unwrap();
        let (request, mut respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let mut body = request.into_body();
        let first = body.data().await.unwrap().unwrap();
        seen_tx.send(first.clone()).unwrap();
        let mut send = respond.send_response(http::Response::new(()), false).unwrap();
        send.send_data(first, true).unwrap();
        std::future::pending::<()>().await;
    });

    let pool = pool();
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let req = request(&certs, addr, target);
    let connect = pool.connect_with_first_bytes(&req, || "hello".into());
    let mut stream = tokio::time::timeout(PATIENCE, connect)
        .await
        .expect("the client waited for the answer before sending its first bytes")
        .unwrap();
    assert_eq!(seen_rx.recv().await.unwrap(), Bytes::from_static(b"hello"));
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello");
}

#[tokio::test]
async fn first_bytes_and_the_rest_arrive_once_and_in_order() {
    let certs = certs();
    let hbone_addr = testkit::spawn_hbone(&certs.server, ForwardingHandler::new()).await;
    let echo = testkit::spawn_echo().await;
    let pool = pool();
    let req = request(&certs, hbone_addr, echo);
    // Twice: on a new connection, then on the pooled one. The bytes are
    // read once the connection is up (a client has had the handshakes'
    // time to write them), and once per tunnel.
    let reads = std::sync::atomic::AtomicUsize::new(0);
    for round in 0..2 {
        let read_first = || {
            assert_eq!(pool.connections_opened(), 1, "read before the connection was up");
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Bytes::from_static(b"first|")
        };
        let mut stream = pool.connect_with_first_bytes(&req, read_first).await.unwrap();
        stream.write_all(b"second|third").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"first|second|third", "round {round}");
    }
    assert_eq!(pool.connections_opened(), 1);
    assert_eq!(reads.into_inner(), 2);
}

#[tokio::test]
async fn a_refused_tunnel_still_says_why() {
    let certs = certs();
    let hbone_addr =
        testkit::spawn_hbone(&certs.server, ForwardingHandler::denying_ports(&[7])).await;
    let pool = pool();
    let denied: SocketAddr = "127.0.0.1:7".parse().unwrap();
    let err = pool
        .connect_with_first_bytes(&request(&certs, hbone_addr, denied), || "secret".into())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Denied { target, .. } if target == denied), "{err:?}");
}

// === a scripted HTTP/2 server ===
//
// h2's server decides for itself which stream ids a GOAWAY names, so these
// tests speak the few frames they need by hand to say exactly "stream 3 was
// (or was not) processed" (RFC 9113 §6.8).

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
/// `:status: 200`, HPACK static table entry 8.
const STATUS_200: u8 = 0x88;

async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    io.write_all(&frame).await.unwrap();
    io.flush().await.unwrap();
}

/// What the scripted server does when the connection's second stream opens.
#[derive(Clone, Copy)]
enum OnSecondStream {
    /// GOAWAY naming stream 1 as the last processed: stream 3 was not.
    GoAwayBefore,
    /// GOAWAY naming stream 3: it was processed, and its fate is unknown.
    GoAwayAfter,
}

/// Serves connections: every first stream gets a 200 and its DATA is
/// reported on `data`; a second stream on a connection gets `script`, and
/// the connection is closed.
async fn scripted_server(
    certs: &Certs,
    script: OnSecondStream,
) -> (SocketAddr, mpsc::UnboundedReceiver<(usize, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(certs);
    let (data_tx, data_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for conn_no in 0.. {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let data_tx = data_tx.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                tls.read_exact(&mut preface).await.unwrap();
                write_frame(&mut tls, SETTINGS, 0, 0, &[]).await;
                let mut received = BytesMut::new();
                while let Some((kind, flags, stream, payload)) = read_frame(&mut tls).await {
                    match (kind, stream) {
                        (SETTINGS, _) if flags & ACK == 0 => {
                            write_frame(&mut tls, SETTINGS, ACK, 0, &[]).await
                        }
                        (PING, _) if flags & ACK == 0 => {
                            write_frame(&mut tls, PING, ACK, 0, &payload).await
                        }
                        (HEADERS, 1) => {
                            write_frame(&mut tls, HEADERS, END_HEADERS, 1, &[STATUS_200]).await
                        }
                        (DATA, 1) if !payload.is_empty() => {
                            received.extend_from_slice(&payload);
                            let _ = data_tx.send((conn_no, received.clone().freeze()));
                        }
                        (HEADERS, 3) => {
                            let last = match script {
                                OnSecondStream::GoAwayBefore => 1u32,
                                OnSecondStream::GoAwayAfter => 3,
                            };
                            let mut goaway = last.to_be_bytes().to_vec();
                            goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                            write_frame(&mut tls, GOAWAY, 0, 0, &goaway).await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, data_rx)
}

/// Opens a plain tunnel on the scripted server so the pool holds a
/// connection whose next stream will be stream 3, then closes the tunnel.
async fn pooled_connection(pool: &Pool, req: &ConnectRequest) {
    drop(pool.connect(req).await.unwrap());
    assert_eq!(pool.connection_count(), 1);
}

#[tokio::test]
async fn first_bytes_are_replayed_when_the_server_never_processed_the_stream() {
    let certs = certs();
    let (addr, mut data) = scripted_server(&certs, OnSecondStream::GoAwayBefore).await;
    let pool = pool();
    let req = request(&certs, addr, "127.0.0.1:9".parse().unwrap());
    pooled_connection(&pool, &req).await;

    let reads = std::sync::atomic::AtomicUsize::new(0);
    let read_first = || {
        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Bytes::from_static(b"only once")
    };
    let connect = pool.connect_with_first_bytes(&req, read_first);
    let _stream = tokio::time::timeout(PATIENCE, connect).await.unwrap().unwrap();
    assert_eq!(pool.connections_opened(), 2, "the stream was opened again on a new connection");
    let (conn_no, bytes) = tokio::time::timeout(PATIENCE, data.recv()).await.unwrap().unwrap();
    assert_eq!((conn_no, bytes), (1, Bytes::from_static(b"only once")));
    assert_eq!(reads.into_inner(), 1, "the replay sends the bytes read the first time");
}

#[tokio::test]
async fn first_bytes_are_not_replayed_when_the_server_may_have_used_them() {
    let certs = certs();
    let (addr, _data) = scripted_server(&certs, OnSecondStream::GoAwayAfter).await;
    let pool = pool();
    let req = request(&certs, addr, "127.0.0.1:9".parse().unwrap());
    pooled_connection(&pool, &req).await;

    let connect = pool.connect_with_first_bytes(&req, || "at most once".into());
    let err = tokio::time::timeout(PATIENCE, connect).await.unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::Interrupted { addr: a, .. } if a == addr), "{err:?}");
    assert_eq!(pool.connections_opened(), 1, "no second attempt");

    // Without first bytes the same failure is retried: nothing can arrive twice.
    let pool = self::pool();
    pooled_connection(&pool, &req).await;
    let connect = pool.connect(&req);
    tokio::time::timeout(PATIENCE, connect).await.unwrap().unwrap();
    assert_eq!(pool.connections_opened(), 2);
}
