//! The connection pool: one HTTP/2 connection carries many tunnels, and
//! connections are shared only between tunnels with the same source
//! identity, expected destination identities and HBONE address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use mesh_core::Identity;
use rustls_pki_types::ServerName;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, info_span};

use super::capture::{CaptureErrors, ErrorSlot};
use super::configs::ClientConfigs;
use super::open::{OpenError, connection_error, open_stream};
use super::{ConnectError, ConnectRequest, Dialer};
use crate::coalesce::Coalesce;
use crate::settings::{H2Settings, TLS_READ_BUFFER};
use crate::stream::H2Stream;
use crate::sync::lock;
use crate::tls::{self, TlsError};

/// Pool limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Tunnels one connection carries before another is opened for the key.
    /// Each connection's TLS and HTTP/2 work is one task, so this is also
    /// how many tunnels to one destination share a core.
    pub max_streams_per_connection: usize,
    /// A connection with no tunnel for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 settings of pooled connections.
    pub h2: H2Settings,
    /// Resume TLS sessions with servers that issue tickets: a new connection
    /// to a peer proxy seen before skips the certificate signatures and
    /// checks (`tls/resumption.rs` says why that stays sound).
    pub resume_sessions: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 32,
            idle_timeout: Duration::from_secs(60),
            h2: H2Settings::default(),
            resume_sessions: true,
        }
    }
}

/// What a pooled connection is shared by. Two tunnels share a connection
/// only if all three parts are equal, so identities never mix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Our identity, presented in the client certificate.
    pub source: Identity,
    /// The identities the server may prove, sorted and deduplicated.
    pub destinations: Vec<Identity>,
    /// The HBONE server's address.
    pub addr: SocketAddr,
}

impl PoolKey {
    fn of(request: &ConnectRequest) -> Self {
        let mut destinations = request.expected_identities.clone();
        destinations.sort();
        destinations.dedup();
        Self { source: request.source.identity().clone(), destinations, addr: request.hbone_addr }
    }
}

/// Pooled, multiplexed HBONE connections. Clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: PoolConfig,
    dialer: Arc<dyn Dialer>,
    entries: Mutex<HashMap<PoolKey, Arc<KeyEntry>>>,
    tls: ClientConfigs,
    next_id: AtomicU64,
    opened: AtomicU64,
    resumed: AtomicU64,
    /// Dropped with the pool: tells connection tasks to close once idle.
    alive: tokio::sync::watch::Sender<()>,
}

#[derive(Default)]
struct KeyEntry {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while dialing, so a burst of tunnels to a new destination opens
    /// one connection instead of one each.
    dialing: tokio::sync::Mutex<()>,
}

struct Conn {
    id: u64,
    send: SendRequest<Bytes>,
    active: AtomicUsize,
    closed: AtomicBool,
    last_used: Mutex<Instant>,
    /// The connection's first I/O error, with its type intact.
    io_error: ErrorSlot,
}

/// Counts one tunnel on a connection; dropped when the tunnel is.
struct StreamToken {
    conn: Arc<Conn>,
}

// === impl Pool ===

impl Pool {
    /// An empty pool dialing with `dialer`.
    pub fn new(config: PoolConfig, dialer: Arc<dyn Dialer>) -> Self {
        let resume_sessions = config.resume_sessions;
        Self {
            inner: Arc::new(PoolInner {
                config,
                dialer,
                entries: Mutex::new(HashMap::new()),
                tls: ClientConfigs::new(resume_sessions),
                next_id: AtomicU64::new(0),
                opened: AtomicU64::new(0),
                resumed: AtomicU64::new(0),
                alive: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// Opens a tunnel, reusing a pooled connection when one has room.
    pub async fn connect(&self, request: &ConnectRequest) -> Result<H2Stream, ConnectError> {
        self.connect_with_first_bytes(request, Bytes::new).await
    }

    /// Opens a tunnel like [`Pool::connect`] and sends its first bytes right
    /// behind the CONNECT instead of after the server's answer, saving a
    /// round trip. `read_first` is called once, when the stream is about
    /// to be opened (after a new connection's handshakes, so a client has
    /// had that long to write); an empty result sends nothing early. On
    /// success the bytes were sent; on failure they were not delivered,
    /// except after [`ConnectError::Interrupted`], when they may have been.
    /// See `client/open.rs` for why this is safe and when it is retried.
    pub async fn connect_with_first_bytes(
        &self,
        request: &ConnectRequest,
        read_first: impl FnOnce() -> Bytes,
    ) -> Result<H2Stream, ConnectError> {
        if request.expected_identities.is_empty() {
            return Err(ConnectError::NoExpectedIdentity(request.hbone_addr));
        }
        let key = PoolKey::of(request);
        let mut first = FirstBytes { read: Some(read_first), bytes: Bytes::new() };
        // A pooled connection can die between checkout and use; then try once
        // more if that cannot deliver bytes twice. A fresh connection that
        // fails says why (often a TLS alert: in TLS 1.3 the server judges our
        // certificate after we finished).
        loop {
            let (token, fresh) = self.checkout_or_dial(&key, request).await?;
            match open_stream(&token.conn.send, request, || first.get()).await {
                Ok((send, recv)) => return Ok(H2Stream::new(send, recv, Some(Box::new(token)))),
                Err(OpenError::ConnectionGone { source, replayable }) => {
                    token.conn.closed.store(true, Ordering::Release);
                    self.inner.remove(&key, token.conn.id);
                    if fresh {
                        return Err(connection_error(key.addr, source, &token.conn.io_error));
                    }
                    if !replayable {
                        return Err(ConnectError::Interrupted { addr: key.addr, source });
                    }
                    debug!(addr = %key.addr, error = %source, "pooled connection gone; retrying");
                }
                Err(OpenError::Refused(e)) => return Err(e),
            }
        }
    }

    /// Open connections, all keys together.
    pub fn connection_count(&self) -> usize {
        let entries = lock(&self.inner.entries);
        entries.values().map(|e| lock(&e.conns).len()).sum()
    }

    /// Connections opened since the pool was made.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Of those, the ones whose TLS handshake resumed an earlier session.
    pub fn sessions_resumed(&self) -> u64 {
        self.inner.resumed.load(Ordering::Relaxed)
    }

    async fn checkout_or_dial(
        &self,
        key: &PoolKey,
        request: &ConnectRequest,
    ) -> Result<(StreamToken, bool), ConnectError> {
        let entry = self.inner.entry(key);
        let max = self.inner.config.max_streams_per_connection;
        if let Some(token) = entry.checkout(max) {
            return Ok((token, false));
        }
        let _dialing = entry.dialing.lock().await;
        if let Some(token) = entry.checkout(max) {
            return Ok((token, false));
        }
        let tls = self
            .inner
            .tls
            .get(&request.source, &key.destinations)
            .map_err(|source| ConnectError::Tls { addr: key.addr, source })?;
        let conn = self.dial(key, server_name(request), tls).await?;
        let token = conn.take();
        lock(&entry.conns).push(conn);
        Ok((token, true))
    }

    async fn dial(
        &self,
        key: &PoolKey,
        server_name: ServerName<'static>,
        tls_config: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Conn>, ConnectError> {
        let addr = key.addr;
        let settings = &self.inner.config.h2;
        let handshake = async {
            let tcp = self
                .inner
                .dialer
                .dial(addr)
                .await
                .map_err(|source| ConnectError::Dial { addr, source })?;
            let tcp = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, tcp);
            let tls = TlsConnector::from(tls_config)
                .connect(server_name, tcp)
                .await
                .map_err(|e| ConnectError::Tls { addr, source: TlsError::from_io(e) })?;
            let session = tls.get_ref().1;
            tls::check_alpn(session.alpn_protocol())
                .map_err(|source| ConnectError::Tls { addr, source })?;
            let resumed = tls::check_resumed(session, Some(&key.destinations))
                .map_err(|source| ConnectError::Tls { addr, source })?
                .is_some();
            let (io, io_error) = CaptureErrors::new(tls);
            let io = Coalesce::new(io, settings.coalesce_writes);
            h2::client::Builder::new()
                .initial_window_size(settings.stream_window)
                .initial_connection_window_size(settings.connection_window)
                .max_frame_size(settings.max_frame_size)
                .enable_push(false)
                .handshake::<_, Bytes>(io)
                .await
                .map(|(send, connection)| (send, connection, io_error, resumed))
                .map_err(|source| ConnectError::H2 { addr, source })
        };
        let (send, mut connection, io_error, resumed) =
            tokio::time::timeout(settings.handshake_timeout, handshake)
                .await
                .map_err(|_| ConnectError::HandshakeTimeout(addr))??;
        let conn = Arc::new(Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            send,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            io_error,
        });
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.inner.resumed.fetch_add(1, Ordering::Relaxed);
        }
        debug!(%addr, id = conn.id, source = %key.source, resumed, "HBONE connection opened");

        let ping_pong = connection.ping_pong();
        let driver = Driver {
            pool: Arc::downgrade(&self.inner),
            key: key.clone(),
            conn: conn.clone(),
            idle_timeout: self.inner.config.idle_timeout,
            pool_alive: self.inner.alive.subscribe(),
        };
        let keepalive = crate::keepalive::run(
            ping_pong,
            settings.keepalive_interval,
            settings.keepalive_timeout,
        );
        tokio::spawn(
            driver
                .run(connection, keepalive)
                .instrument(info_span!("hbone_outbound", %addr, id = conn.id)),
        );
        Ok(conn)
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .field("connections", &self.connection_count())
            .finish()
    }
}

/// The name the TLS session store knows the server by (never sent: SNI is
/// off): the peer proxy's, so that sessions resume across the addresses it
/// serves, or else the address.
fn server_name(request: &ConnectRequest) -> ServerName<'static> {
    request
        .peer_proxy
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(request.hbone_addr.ip().into()))
}

/// A tunnel's first bytes: read once, when first needed, and kept for a
/// replay on another connection.
struct FirstBytes<F> {
    read: Option<F>,
    bytes: Bytes,
}

impl<F: FnOnce() -> Bytes> FirstBytes<F> {
    fn get(&mut self) -> Bytes {
        if let Some(read) = self.read.take() {
            self.bytes = read();
        }
        self.bytes.clone()
    }
}

// === impl PoolInner ===

impl PoolInner {
    fn entry(&self, key: &PoolKey) -> Arc<KeyEntry> {
        lock(&self.entries).entry(key.clone()).or_default().clone()
    }

    /// Removes a connection, and its key's entry once it holds none.
    fn remove(&self, key: &PoolKey, id: u64) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get(key) {
            let empty = {
                let mut conns = lock(&entry.conns);
                conns.retain(|c| c.id != id);
                conns.is_empty()
            };
            // An entry someone is dialing into stays, so their new
            // connection lands where others will find it.
            if empty && entry.dialing.try_lock().is_ok() {
                entries.remove(key);
            }
        }
    }

    /// Removes `conn` if it is still idle; checkout takes the same lock, so
    /// a connection cannot be handed out while it is being retired.
    fn retire_if_idle(&self, key: &PoolKey, conn: &Conn) -> bool {
        let entries = lock(&self.entries);
        let Some(entry) = entries.get(key).cloned() else {
            return true;
        };
        drop(entries);
        {
            let conns = lock(&entry.conns);
            if conn.active.load(Ordering::Acquire) != 0 {
                return false;
            }
            conn.closed.store(true, Ordering::Release);
            drop(conns);
        }
        self.remove(key, conn.id);
        true
    }
}

// === impl KeyEntry ===

impl KeyEntry {
    fn checkout(&self, max_streams: usize) -> Option<StreamToken> {
        let conns = lock(&self.conns);
        conns
            .iter()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .find(|c| c.active.load(Ordering::Acquire) < max_streams)
            .map(|c| c.take())
    }
}

// === impl Conn ===

impl Conn {
    fn take(self: &Arc<Self>) -> StreamToken {
        self.active.fetch_add(1, Ordering::AcqRel);
        *lock(&self.last_used) = Instant::now();
        StreamToken { conn: self.clone() }
    }
}

impl Drop for StreamToken {
    fn drop(&mut self) {
        *lock(&self.conn.last_used) = Instant::now();
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

// === the connection task ===

/// Drives one connection until it fails, stops answering pings, or sits
/// idle for the idle timeout.
struct Driver {
    pool: Weak<PoolInner>,
    key: PoolKey,
    conn: Arc<Conn>,
    idle_timeout: Duration,
    pool_alive: tokio::sync::watch::Receiver<()>,
}

/// How often a connection whose pool is gone checks for its last stream.
const ORPHAN_CHECK: Duration = Duration::from_millis(100);

impl Driver {
    async fn run<T>(
        mut self,
        connection: h2::client::Connection<T, Bytes>,
        keepalive: impl std::future::Future<Output = ()>,
    ) where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio::pin!(connection, keepalive);
        let mut next_check = Instant::now() + self.idle_timeout;
        let mut orphaned = false;
        loop {
            tokio::select! {
                // The pool was dropped: nobody can check this connection out
                // again, so close it as soon as its last stream ends.
                _ = self.pool_alive.changed(), if !orphaned => {
                    orphaned = true;
                    self.idle_timeout = Duration::ZERO;
                    next_check = Instant::now();
                }
                result = &mut connection => {
                    match result {
                        Ok(()) => debug!("HBONE connection closed"),
                        Err(e) => debug!(error = %e, "HBONE connection failed"),
                    }
                    break;
                }
                _ = &mut keepalive => {
                    debug!("HBONE peer stopped answering pings; closing");
                    break;
                }
                _ = tokio::time::sleep_until(next_check) => {
                    let idle_since = *lock(&self.conn.last_used);
                    let idle = self.conn.active.load(Ordering::Acquire) == 0;
                    if idle && idle_since + self.idle_timeout <= Instant::now() {
                        let retired = match self.pool.upgrade() {
                            Some(pool) => pool.retire_if_idle(&self.key, &self.conn),
                            None => true,
                        };
                        if retired {
                            debug!("HBONE connection idle; closing");
                            break;
                        }
                    }
                    next_check = if idle {
                        idle_since + self.idle_timeout
                    } else {
                        Instant::now() + self.idle_timeout.max(ORPHAN_CHECK)
                    };
                }
            }
        }
        self.conn.closed.store(true, Ordering::Release);
        if let Some(pool) = self.pool.upgrade() {
            pool.remove(&self.key, self.conn.id);
        }
    }
}
