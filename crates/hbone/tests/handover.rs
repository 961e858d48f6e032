//! An accepted tunnel handed to the handler's own [`Tunnel`], as an L7
//! proxy needs: the handler reads HTTP from the tunnel itself, knowing the
//! peer's verified identity and the CONNECT's target, with no upstream
//! socket and no in-memory pipe in between.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{
    ConnectHandler, ConnectRequest, H2Stream, InboundConnect, Pool, PoolConfig, TcpDialer, Tunnel,
    Verdict,
};
use mesh_core::Identity;
use testkit::TestCa;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Answers one HTTP/1.1 request per tunnel, naming who asked for what.
struct Answering;

/// What an accepted CONNECT becomes: the facts the answer needs.
struct HttpAnswer {
    peer: Identity,
    target: SocketAddr,
}

impl ConnectHandler for Answering {
    type Upstream = HttpAnswer;

    async fn handle(&self, request: InboundConnect) -> Verdict<HttpAnswer> {
        if request.target.port() == 1 {
            return Verdict::Deny("port 1 is closed".into());
        }
        Verdict::Accept(HttpAnswer { peer: request.peer_identity, target: request.target })
    }
}

impl Tunnel for HttpAnswer {
    async fn serve(self, tunnel: H2Stream) {
        let mut tunnel = BufReader::new(tunnel);
        let mut request_line = String::new();
        tunnel.read_line(&mut request_line).await.unwrap();
        loop {
            let mut header = String::new();
            if tunnel.read_line(&mut header).await.unwrap() == 0 || header == "\r\n" {
                break;
            }
        }
        let body = format!("{} asked {} of {}", self.peer, request_line.trim_end(), self.target);
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let tunnel = tunnel.get_mut();
        tunnel.write_all(response.as_bytes()).await.unwrap();
        tunnel.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_l7_handler_reads_requests_from_the_tunnel_itself() {
    let ca = TestCa::new("cluster.local");
    let client_id = ca.identity("ns-a", "client");
    let server_id = ca.identity("ns-b", "waypoint");
    let hbone = testkit::spawn_hbone(&ca.issue(&server_id), Arc::new(Answering)).await;
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let request = |target: &str| {
        ConnectRequest::new(
            ca.issue(&client_id),
            hbone,
            vec![server_id.clone()],
            target.parse().unwrap(),
        )
    };

    let mut stream = pool.connect(&request("10.96.0.7:80")).await.unwrap();
    stream.write_all(b"GET /hello HTTP/1.1\r\nhost: web\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with(&format!("{client_id} asked GET /hello HTTP/1.1 of 10.96.0.7:80")),
        "{response}"
    );

    // Refusals are unchanged: no tunnel, a 401.
    let refused = pool.connect(&request("10.96.0.7:1")).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
}
