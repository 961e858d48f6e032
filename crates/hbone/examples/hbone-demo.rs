//! The HBONE demo: two workloads, one mesh CA, one tunnel, on loopback.
//!
//! `cargo run -p hbone --example hbone-demo`
//!
//! It mints certificates for `sleep` and `httpbin`, starts an HBONE server
//! for httpbin in front of a small echo app, sends a message through a
//! tunnel, and then shows the tunnel refusing a server with the wrong
//! identity and a CONNECT the server's policy denies.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::bail;
use hbone::{
    ConnectError, ConnectHandler, ConnectRequest, H2Settings, HboneServer, InboundConnect, Pool,
    PoolConfig, TcpDialer, TlsError, Verdict,
};
use testkit::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Lets only `sleep` in, and logs what it decides.
struct DemoPolicy {
    app: SocketAddr,
}

impl ConnectHandler for DemoPolicy {
    type Upstream = TcpStream;

    async fn handle(&self, request: InboundConnect) -> Verdict<TcpStream> {
        let who = &request.peer_identity;
        if who.service_account() != "sleep" {
            println!("   httpbin's HBONE server: {who} -> DENY (401)");
            return Verdict::Deny("only sleep may call httpbin".into());
        }
        println!(
            "   httpbin's HBONE server: verified peer {who} -> ALLOW, CONNECT {}",
            request.target
        );
        match TcpStream::connect(self.app).await {
            Ok(tcp) => Verdict::Accept(tcp),
            Err(e) => Verdict::Unavailable(e.to_string()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("1. A mesh CA for trust domain cluster.local issues three workload certificates");
    let ca = TestCa::with_intermediate("cluster.local");
    let sleep = ca.issue(&ca.identity("demo", "sleep"));
    let httpbin_id = ca.identity("demo", "httpbin");
    let httpbin = ca.issue(&httpbin_id);
    let curl = ca.issue(&ca.identity("other", "curl"));
    for cert in [&sleep, &httpbin, &curl] {
        let expires = cert.info().not_after.duration_since(std::time::SystemTime::now())?;
        println!(
            "   {} (chain of {}, expires in {}h)",
            cert.identity(),
            cert.chain().len(),
            expires.as_secs() / 3600
        );
    }

    println!("2. httpbin's app listens on loopback; its HBONE server fronts it");
    let app = testkit::spawn_echo().await;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let hbone_addr = listener.local_addr()?;
    let server = Arc::new(HboneServer::new(
        hbone::tls::server_config(&httpbin, &[])?,
        Arc::new(DemoPolicy { app }),
        H2Settings::default(),
    ));
    tokio::spawn(server.run(listener, std::future::pending()));
    println!("   app {app}, HBONE {hbone_addr} (TLS 1.3, ALPN h2, client certificate required)");

    println!("3. sleep opens a tunnel, expecting the server to be {httpbin_id}");
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let original_client: SocketAddr = "10.0.0.7:40000".parse()?;
    let request = |source: &hbone::WorkloadCertificate, expected| ConnectRequest {
        forwarded_for: Some(original_client),
        ..ConnectRequest::new(source.clone(), hbone_addr, vec![expected], app)
    };
    let mut tunnel = pool.connect(&request(&sleep, httpbin_id.clone())).await?;
    tunnel.write_all(b"hello from sleep").await?;
    tunnel.shutdown().await?;
    let mut reply = String::new();
    tunnel.read_to_string(&mut reply).await?;
    println!("   sent \"hello from sleep\", the app echoed \"{reply}\" through the tunnel");
    if reply != "hello from sleep" {
        bail!("echo came back wrong: {reply:?}");
    }

    println!("4. sleep expects reviews at that address instead: the client refuses the server");
    match pool.connect(&request(&sleep, ca.identity("demo", "reviews"))).await {
        Err(ConnectError::Tls { source: TlsError::WrongIdentity { found, .. }, .. }) => {
            println!(
                "   refused: the server proved {found}, not spiffe://cluster.local/ns/demo/sa/reviews"
            );
        }
        other => bail!("expected a wrong-identity refusal, got {other:?}"),
    }

    println!("5. curl (another namespace) tries httpbin: mTLS succeeds, the policy says no");
    match pool.connect(&request(&curl, httpbin_id.clone())).await {
        Err(ConnectError::Denied { .. }) => println!("   refused with 401"),
        other => bail!("expected 401, got {other:?}"),
    }

    println!(
        "Done: {} HBONE connections opened for 3 tunnel attempts (the refused identity never got one).",
        pool.connections_opened()
    );
    Ok(())
}
