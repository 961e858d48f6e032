//! A node proxy in-process: pods are loopback addresses, "redirection" is a
//! table the test fills, certificates come from a test CA.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_core::Address;
use prometheus_client::registry::Registry;
use proxy_core::certificates::{CertificateSettings, WorkloadCertificates};
use proxy_core::sockets::HostSockets;
use proxy_core::store::WorkloadStore;
use proxy_core::tcp_metrics::TcpMetrics;
use tokio::net::{TcpSocket, TcpStream};
use ztunnel::original_dst::OriginalDst;
use ztunnel::{PodSpec, ProxyConfig, Shared, Ztunnel};

/// The test CA provider, under the name these tests use.
pub type FakeCa = testkit::TestCaProvider;

/// "iptables": client socket address → where it was going.
#[derive(Default)]
pub struct Redirects(Mutex<HashMap<SocketAddr, SocketAddr>>);

impl OriginalDst for Redirects {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let peer = stream.peer_addr()?;
        self.0
            .lock()
            .unwrap()
            .get(&peer)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no redirect recorded"))
    }
}

impl Redirects {
    /// Connects from `from_ip` to `capture` as if the client had dialled
    /// `dst` and iptables had redirected it.
    pub async fn connect(
        &self,
        from_ip: IpAddr,
        capture: SocketAddr,
        dst: SocketAddr,
    ) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from_ip, 0)).unwrap();
        let local = socket.local_addr().unwrap();
        self.0.lock().unwrap().insert(local, dst);
        socket.connect(capture).await.unwrap()
    }

    /// Like [`Redirects::connect`], with `first` already written when the
    /// proxy first sees the connection: connecting and writing block the
    /// test's thread, so on a current-thread runtime no proxy task runs in
    /// between.
    pub fn connect_having_sent(
        &self,
        from_ip: IpAddr,
        capture: SocketAddr,
        dst: SocketAddr,
        first: &[u8],
    ) -> TcpStream {
        use std::io::Write;
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(from_ip, 0).into()).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        self.0.lock().unwrap().insert(local, dst);
        socket.connect(&capture.into()).unwrap();
        let mut stream = std::net::TcpStream::from(socket);
        stream.write_all(first).unwrap();
        stream.set_nonblocking(true).unwrap();
        TcpStream::from_std(stream).unwrap()
    }
}

/// One node proxy with its metrics.
pub struct Node {
    pub ztunnel: Arc<Ztunnel>,
    pub registry: Registry,
    pub redirects: Arc<Redirects>,
}

pub fn config() -> ProxyConfig {
    ProxyConfig {
        drain_deadline: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        ..ProxyConfig::default()
    }
}

impl Node {
    pub fn new(store: Arc<WorkloadStore>, ca: Arc<FakeCa>) -> Self {
        Self::with_config(store, ca, config())
    }

    pub fn with_config(store: Arc<WorkloadStore>, ca: Arc<FakeCa>, config: ProxyConfig) -> Self {
        let mut registry = Registry::default();
        let metrics = TcpMetrics::register(&mut registry);
        let certs = WorkloadCertificates::new(
            ca,
            CertificateSettings {
                initial_backoff: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let shared = Shared::new(store, certs, metrics, config);
        Self { ztunnel: Ztunnel::new(shared), registry, redirects: Arc::new(Redirects::default()) }
    }

    /// Serves a pod whose listeners bind `ip`.
    pub fn add_pod(&self, name: &str, namespace: &str, sa: &str, ip: IpAddr) {
        let spec = PodSpec {
            uid: pod_uid(namespace, name),
            workload_uid: uid(namespace, name),
            name: name.into(),
            namespace: namespace.into(),
            service_account: sa.into(),
        };
        self.ztunnel.add_pod(spec, Arc::new(HostSockets::new(ip)), self.redirects.clone()).unwrap();
    }

    pub fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// The value of the first sample of `metric` whose labels contain all
    /// of `labels`; 0 when none.
    pub fn sample(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(metric) && l.as_bytes().get(metric.len()) == Some(&b'{'))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the node has a certificate for each pod.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if self.ztunnel.shared().certs.pending() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("certificates never arrived");
    }

    /// Waits until no connection is tracked.
    pub async fn idle(&self) {
        for _ in 0..300 {
            if self.ztunnel.shared().connections.count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connections still open: {:?}", self.ztunnel.shared().connections.list());
    }
}

/// The Kubernetes UID a test pod is served under (ZDS's key for it; the
/// workload store knows it as [`uid`]).
pub fn pod_uid(namespace: &str, name: &str) -> String {
    format!("pod-uid-{namespace}-{name}")
}

pub fn uid(namespace: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{namespace}/{name}")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn put(store: &WorkloadStore, address: Address) {
    store.insert(address);
}

/// An echo server on `ip:port`.
pub async fn echo_on(ip: IpAddr, port: u16) -> SocketAddr {
    greeter_on(ip, port, b"").await
}

/// A server on `ip:port` that greets, then echoes.
pub async fn greeter_on(ip: IpAddr, port: u16, greeting: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port)).await.unwrap();
    testkit::serve_echo(listener, greeting)
}

/// Writes `data`, half-closes, reads everything back.
pub async fn round_trip(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    try_round_trip(stream, data).await.unwrap()
}

/// Like [`round_trip`], keeping the error (a refused connection is closed
/// or reset, depending on timing).
pub async fn try_round_trip(mut stream: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = stream.split();
    let write = async {
        // A refused connection may be closed before or while we write.
        let _ = w.write_all(data).await;
        let _ = w.shutdown().await;
    };
    let mut out = Vec::new();
    let read = r.read_to_end(&mut out);
    let (_, read) = tokio::join!(write, read);
    read.map(|_| out)
}

/// Asserts the proxy refused the connection: nothing came back.
pub async fn assert_refused(stream: TcpStream) {
    match try_round_trip(stream, b"anyone there?").await {
        Ok(bytes) => assert!(bytes.is_empty(), "expected a refusal, got {bytes:?}"),
        Err(e) => assert!(
            matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            "expected a refusal, got {e}"
        ),
    }
}
