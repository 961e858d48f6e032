//! The upstream pool on its own, against raw TCP servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use l7::balance::Endpoint;
use l7::body::{Body, BodyError};
use l7::clients::{Clients, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Tcp;

impl Connector for Tcp {
    type Io = TcpStream;

    async fn connect(&self, endpoint: &Endpoint, _: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect(endpoint.address).await
    }
}

/// A server that answers each request as soon as its head has arrived,
/// without reading its body, and keeps every connection open; with the
/// count of connections it accepted.
async fn early_answering_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn request(method: &str, body: Body) -> http::Request<Body> {
    http::Request::builder().method(method).uri("/").header("host", "x").body(body).unwrap()
}

#[tokio::test]
async fn a_pooled_connection_still_sending_a_body_is_not_waited_on_forever() {
    let (addr, accepted) = early_answering_server().await;
    let endpoint = Endpoint { uid: "pod".into(), address: addr };
    let clients = Clients::new(Tcp);
    let client: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    // A request whose body never ends, answered early: its answer read to
    // the end puts the connection back in the pool, still sending.
    let endless =
        StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, BodyError>>()).boxed();
    let answer = clients
        .send(&endpoint, client, http::Version::HTTP_11, request("POST", endless), 0)
        .await
        .unwrap();
    assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(clients.pooled(), (1, 0), "back in the pool");
    // The next request does not wait on it for long: it gets a connection
    // of its own.
    let started = Instant::now();
    let empty = l7::body::empty();
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        clients.send(&endpoint, client, http::Version::HTTP_11, request("GET", empty), 0),
    )
    .await
    .expect("the next request must not hang on the busy connection")
    .unwrap();
    assert_eq!(next.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a second connection");
}

#[tokio::test]
async fn a_connection_is_reused_once_its_answer_is_read() {
    let (addr, accepted) = early_answering_server().await;
    let endpoint = Endpoint { uid: "pod".into(), address: addr };
    let clients = Clients::new(Tcp);
    let client: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    for _ in 0..3 {
        let answer = clients
            .send(&endpoint, client, http::Version::HTTP_11, request("GET", l7::body::empty()), 0)
            .await
            .unwrap();
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(clients.pooled(), (1, 0));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
}
