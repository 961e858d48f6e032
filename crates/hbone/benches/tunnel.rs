//! HBONE against plain TCP on loopback, measured side by side in one run.
//!
//! `cargo bench -p hbone --bench tunnel`. Figures and how to read them are in
//! docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hbone::{ConnectRequest, Pool, PoolConfig, TcpDialer};
use testkit::{ForwardingHandler, TestCa};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

const TRANSFER: usize = 64 * 1024 * 1024;

struct Setup {
    request_to: Box<dyn Fn(SocketAddr) -> ConnectRequest>,
    sink: SocketAddr,
    echo: SocketAddr,
}

fn setup(rt: &Runtime) -> Setup {
    rt.block_on(async {
        let ca = TestCa::new("cluster.local");
        let client = ca.issue(&ca.identity("bench", "client"));
        let server_id = ca.identity("bench", "server");
        let hbone_addr =
            testkit::spawn_hbone(&ca.issue(&server_id), ForwardingHandler::new()).await;
        let sink = testkit::spawn_discard().await;
        let echo = testkit::spawn_echo().await;
        Setup {
            request_to: Box::new(move |target| {
                ConnectRequest::new(client.clone(), hbone_addr, vec![server_id.clone()], target)
            }),
            sink,
            echo,
        }
    })
}

/// Writes `TRANSFER` bytes, half-closes, waits for the sink's one-byte ack.
async fn push<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, chunk: &[u8]) {
    let mut left = TRANSFER;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    stream.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
}

fn throughput(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = setup(&rt);
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let chunk = vec![0xa5u8; 256 * 1024];
    let mut group = c.benchmark_group("throughput_one_stream");
    group.throughput(Throughput::Bytes(TRANSFER as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function(BenchmarkId::new("plain_tcp", "64MiB"), |b| {
        b.to_async(&rt).iter(|| async {
            let tcp = tokio::net::TcpStream::connect(s.sink).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            push(tcp, &chunk).await;
        })
    });
    let request = (s.request_to)(s.sink);
    group.bench_function(BenchmarkId::new("hbone", "64MiB"), |b| {
        b.to_async(&rt).iter(|| async {
            let stream = pool.connect(&request).await.unwrap();
            push(stream, &chunk).await;
        })
    });
    group.finish();
}

/// One round trip: open, write 1 byte, read it back.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    stream.write_all(b"x").await.unwrap();
    let mut back = [0u8; 1];
    stream.read_exact(&mut back).await.unwrap();
}

fn stream_open(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = setup(&rt);
    let mut group = c.benchmark_group("open_and_first_byte");
    group.bench_function("plain_tcp", |b| {
        b.to_async(&rt).iter(|| async {
            let tcp = tokio::net::TcpStream::connect(s.echo).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            ping(tcp).await;
        })
    });
    let request = (s.request_to)(s.echo);
    let warm = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    rt.block_on(async { drop(warm.connect(&request).await.unwrap()) });
    group.bench_function("hbone_warm_pool", |b| {
        b.to_async(&rt).iter(|| async { ping(warm.connect(&request).await.unwrap()).await })
    });
    group.bench_function("hbone_cold_tls_handshake", |b| {
        b.to_async(&rt).iter(|| async {
            let cold = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
            ping(cold.connect(&request).await.unwrap()).await;
        })
    });
    group.finish();
}

/// The mutual TLS handshake alone (TCP connect, handshake, one byte each
/// way so the server has finished too and the client has read its ticket):
/// full, and resuming the previous iteration's session.
fn tls_handshake(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("bench", "client"));
    let server_id = ca.identity("bench", "server");
    let server_tls = hbone::tls::server_config_with_resumption(
        &ca.issue(&server_id),
        &[],
        Duration::from_secs(3600),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(&byte).await;
                        let _ = tls.flush().await;
                    }
                });
            }
        });
        addr
    });
    let expected = std::slice::from_ref(&server_id);
    let full = Arc::new(hbone::tls::client_config(&client, expected).unwrap());
    let resuming = Arc::new(hbone::tls::client_config_with_resumption(&client, expected).unwrap());
    let handshake = |config: Arc<rustls::ClientConfig>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        ping(tls).await;
    };
    let mut group = c.benchmark_group("tls_handshake");
    group.bench_function("full", |b| b.to_async(&rt).iter(|| handshake(full.clone())));
    group.bench_function("resumed", |b| b.to_async(&rt).iter(|| handshake(resuming.clone())));
    group.finish();
}

criterion_group!(benches, throughput, stream_open, tls_handshake);
criterion_main!(benches);
