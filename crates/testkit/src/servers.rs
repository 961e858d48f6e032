//! Small servers for tests, all on loopback port 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hbone::{ConnectHandler, InboundConnect, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Binds `127.0.0.1:0` and runs `serve` on every accepted connection.
async fn spawn_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), serve)
}

/// Runs `serve` on every connection `listener` accepts. The caller binds:
/// a particular address, or a socket made inside a network namespace.
fn serve_on<F, Fut>(listener: TcpListener, serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve(tcp));
        }
    });
    addr
}

/// Echoes every byte back; after the client half-closes, finishes echoing
/// and half-closes too. Returns the address it listens on.
pub async fn spawn_echo() -> SocketAddr {
    serve_echo(TcpListener::bind("127.0.0.1:0").await.unwrap(), b"")
}

/// Like [`spawn_echo`] on a listener the caller bound, after sending
/// `greeting` (empty: none) to each client as it connects.
pub fn serve_echo(listener: TcpListener, greeting: &'static [u8]) -> SocketAddr {
    serve_on(listener, move |mut tcp| async move {
        if tcp.write_all(greeting).await.is_err() {
            return;
        }
        let (mut r, mut w) = tcp.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
}

/// Sends `greeting` as soon as a client connects, then reads until the
/// client half-closes and answers with the number of bytes it read, as
/// ASCII, and closes. Returns the address it listens on.
pub async fn spawn_speak_first(greeting: &'static [u8]) -> SocketAddr {
    spawn_server(move |mut tcp| async move {
        if tcp.write_all(greeting).await.is_err() {
            return;
        }
        let mut sink = Vec::new();
        let n = tcp.read_to_end(&mut sink).await.unwrap_or(0);
        let _ = tcp.write_all(format!("read {n}").as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await
}

/// An HBONE handler that connects each CONNECT to its target over plain TCP
/// (503 when that fails), denies targets on a deny list (401), and records
/// every request it saw.
#[derive(Default)]
pub struct ForwardingHandler {
    denied_ports: Vec<u16>,
    seen: Mutex<Vec<InboundConnect>>,
}

impl ForwardingHandler {
    /// Forwards everything.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Denies CONNECTs to these target ports.
    pub fn denying_ports(ports: &[u16]) -> Arc<Self> {
        Arc::new(Self { denied_ports: ports.to_vec(), ..Self::default() })
    }

    /// Every CONNECT handled so far.
    pub fn seen(&self) -> Vec<InboundConnect> {
        self.seen.lock().unwrap().clone()
    }
}

impl ConnectHandler for ForwardingHandler {
    type Upstream = TcpStream;

    async fn handle(&self, request: InboundConnect) -> Verdict<TcpStream> {
        let target = request.target;
        self.seen.lock().unwrap().push(request);
        if self.denied_ports.contains(&target.port()) {
            return Verdict::Deny(format!("port {} denied", target.port()));
        }
        match TcpStream::connect(target).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                Verdict::Accept(tcp)
            }
            Err(e) => Verdict::Unavailable(e.to_string()),
        }
    }
}

/// Starts an HBONE server presenting `cert` on `127.0.0.1:0`, with default
/// settings, and returns its address. It runs until the test's runtime ends.
pub async fn spawn_hbone<H: ConnectHandler>(
    cert: &hbone::WorkloadCertificate,
    handler: Arc<H>,
) -> SocketAddr {
    spawn_hbone_with(cert, handler, hbone::H2Settings::default()).await
}

/// [`spawn_hbone`] with chosen HTTP/2 settings.
pub async fn spawn_hbone_with<H: ConnectHandler>(
    cert: &hbone::WorkloadCertificate,
    handler: Arc<H>,
    settings: hbone::H2Settings,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = hbone::tls::server_config(cert, &[]).unwrap();
    let server = Arc::new(hbone::HboneServer::new(tls, handler, settings));
    tokio::spawn(server.run(listener, std::future::pending()));
    addr
}

/// Reads until the client half-closes, then answers with the SHA-256 of
/// everything it read (64 hex characters) and closes.
pub async fn spawn_hash_sink() -> SocketAddr {
    spawn_server(|mut tcp| async move {
        let mut hasher = Sha256Stream::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return,
            }
        }
        let _ = tcp.write_all(hasher.hex().as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await
}

/// SHA-256 over a stream of chunks, for byte-exactness checks.
pub struct Sha256Stream(ring::digest::Context);

impl Default for Sha256Stream {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256Stream {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest so far, lowercase hex.
    pub fn hex(self) -> String {
        self.0.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Fills buffers with a repeatable pseudo-random byte sequence (xorshift),
/// so large transfers carry data that would show reordering or loss.
pub struct PatternSource(u64);

impl PatternSource {
    /// A sequence starting from `seed` (any non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Overwrites `buf` with the next bytes of the sequence.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Reads and discards until the client half-closes, then writes one byte
/// (`k`) and closes: a sink for throughput measurements.
pub async fn spawn_discard() -> SocketAddr {
    spawn_server(|mut tcp| async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = tcp.write_all(b"k").await;
        let _ = tcp.shutdown().await;
    })
    .await
}
