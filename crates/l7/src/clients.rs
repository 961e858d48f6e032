//! Upstream HTTP connections, pooled per endpoint: HTTP/1.1 connections
//! reused one request at a time, one multiplexed HTTP/2 connection per
//! endpoint. The transport under them is the caller's (`Connector`: an
//! HBONE tunnel in the waypoint, a plain socket in tests).
//!
//! Hand-written rather than hyper-util's legacy `Client`: that client pools
//! by URI scheme and authority, and our pool key is the endpoint a
//! balancer chose (the URI keeps the service's authority), with a limit of
//! requests per connection from the DestinationRule.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, Version};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::balance::Endpoint;
use crate::body::Body;

/// Opens a byte stream to an endpoint.
pub trait Connector: Send + Sync + 'static {
    /// The stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `endpoint` on behalf of the client at `source` (an HBONE
    /// connector sends it on as `Forwarded`, so the destination knows the
    /// real client). The port is 0: connections are shared by a client's
    /// connections.
    fn connect(
        &self,
        endpoint: &Endpoint,
        source: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Connections are pooled per endpoint and per client address: a
/// connection carries one client's requests, so what the destination
/// learns about the client (its address, through the connector) stays
/// true. The client's port is left out (0), or every client connection
/// would open its own upstream connections and leave them behind.
type Key = (Endpoint, SocketAddr);

/// An idle connection kept longer than this is closed rather than reused,
/// and one not used for this long is dropped at the next sweep: a pool
/// never holds what no client uses any more.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a pooled HTTP/1.1 connection may take to be ready for its
/// next request before a new one is opened instead.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Past this many keys a pool is swept of idle and closed entries.
const SWEEP_AT: usize = 256;

/// Why an attempt got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// Where.
        endpoint: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP handshake over a new connection failed.
    #[error("HTTP handshake with {endpoint} failed")]
    Handshake {
        /// Where.
        endpoint: std::net::SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The connection or stream ended before an answer.
    #[error("{endpoint} reset the request before answering")]
    Reset {
        /// Where.
        endpoint: std::net::SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
}

impl SendError {
    /// Whether no connection was made (`connect-failure`), rather than a
    /// stream that failed (`reset`).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect { .. } | SendError::Handshake { .. })
    }
}

struct Idle {
    sender: http1::SendRequest<Body>,
    used: u32,
    since: std::time::Instant,
}

/// An HTTP/2 connection shared by a key's requests.
struct Shared2 {
    sender: http2::SendRequest<Body>,
    used: u32,
    last: std::time::Instant,
}

/// At most this many idle HTTP/1.1 connections are kept per endpoint and
/// client address.
const IDLE_PER_ENDPOINT: usize = 16;

/// Pooled upstream connections.
pub struct Clients<C> {
    connector: C,
    http1: Arc<Mutex<HashMap<Key, Vec<Idle>>>>,
    http2: Mutex<HashMap<Key, Shared2>>,
}

impl<C> Clients<C> {
    /// Pooled keys (HTTP/1.1, HTTP/2), for tests and debugging.
    pub fn pooled(&self) -> (usize, usize) {
        (
            self.http1.lock().unwrap_or_else(|p| p.into_inner()).len(),
            self.http2.lock().unwrap_or_else(|p| p.into_inner()).len(),
        )
    }
}

impl<C: Connector> Clients<C> {
    /// A pool over `connector`.
    pub fn new(connector: C) -> Self {
        Self { connector, http1: Arc::default(), http2: Mutex::default() }
    }

    /// The transport.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    async fn connect(&self, key: &Key) -> Result<TokioIo<C::Io>, SendError> {
        let (endpoint, source) = key;
        self.connector
            .connect(endpoint, *source)
            .await
            .map(TokioIo::new)
            .map_err(|source| SendError::Connect { endpoint: endpoint.address, source })
    }

    /// Sends `request` from the client at `source` to `endpoint` over
    /// HTTP/2 when `version` is HTTP/2, else HTTP/1.1. `max_per_connection`
    /// (0: none) retires a connection after that many requests.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        source: SocketAddr,
        version: Version,
        request: Request<Body>,
        max_per_connection: u32,
    ) -> Result<Response<Body>, SendError> {
        let key = (endpoint.clone(), SocketAddr::new(source.ip(), 0));
        if version == Version::HTTP_2 {
            let response = self.send_http2(key, request, max_per_connection).await?;
            Ok(response.map(crate::body::from_hyper))
        } else {
            self.send_http1(key, request, max_per_connection).await
        }
    }

    async fn send_http2(
        &self,
        key: Key,
        mut request: Request<Body>,
        max_per_connection: u32,
    ) -> Result<Response<Incoming>, SendError> {
        let reusable = {
            let mut pool = self.http2.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            match pool.get_mut(&key) {
                Some(shared)
                    if !shared.sender.is_closed()
                        && (max_per_connection == 0 || shared.used < max_per_connection) =>
                {
                    shared.used += 1;
                    shared.last = now;
                    Some(shared.sender.clone())
                }
                Some(_) => {
                    pool.remove(&key);
                    None
                }
                None => None,
            }
        };
        let mut sender = match reusable {
            Some(s) => s,
            None => {
                let io = self.connect(&key).await?;
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|source| SendError::Handshake { endpoint: key.0.address, source })?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                    }
                });
                let mut pool = self.http2.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() >= SWEEP_AT {
                    let now = std::time::Instant::now();
                    pool.retain(|_, s| !s.sender.is_closed() && now - s.last < IDLE_TIMEOUT);
                }
                pool.insert(
                    key.clone(),
                    Shared2 { sender: sender.clone(), used: 1, last: std::time::Instant::now() },
                );
                drop(pool);
                sender
            }
        };
        *request.version_mut() = Version::HTTP_2;
        sender
            .send_request(request)
            .await
            .map_err(|source| SendError::Reset { endpoint: key.0.address, source })
    }

    async fn send_http1(
        &self,
        key: Key,
        mut request: Request<Body>,
        max_per_connection: u32,
    ) -> Result<Response<Body>, SendError> {
        let idle = {
            let mut pool = self.http1.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            let fresh = |i: &Idle| !i.sender.is_closed() && now - i.since < IDLE_TIMEOUT;
            let taken = pool.get_mut(&key).and_then(|list| {
                list.retain(fresh);
                list.pop()
            });
            if pool.get(&key).is_some_and(Vec::is_empty) {
                pool.remove(&key);
            }
            taken
        };
        // A connection comes back when its last answer has been read; its
        // task may not have seen the end yet, so it is awaited, briefly: one
        // still sending a request body the server answered early could wait
        // on its client forever. Past the wait it is dropped (closed).
        let reused = match idle {
            Some(i) if i.sender.is_ready() => Some((i.sender, i.used)),
            Some(mut i) => tokio::time::timeout(READY_WAIT, i.sender.ready())
                .await
                .is_ok_and(|r| r.is_ok())
                .then_some((i.sender, i.used)),
            None => None,
        };
        let (mut sender, used) = match reused {
            Some(r) => r,
            None => {
                let io = self.connect(&key).await?;
                let (sender, connection) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|source| SendError::Handshake { endpoint: key.0.address, source })?;
                tokio::spawn(async move {
                    if let Err(e) = connection.with_upgrades().await {
                        tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                    }
                });
                (sender, 0)
            }
        };
        *request.version_mut() = Version::HTTP_11;
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| SendError::Reset { endpoint: key.0.address, source })?;
        let used = used + 1;
        // Back to the pool once the answer has been read to its end, unless
        // it was an upgrade (the connection is the caller's now) or it is
        // used up. An answer dropped before its end takes the connection
        // with it.
        let give_back = (!upgrade && (max_per_connection == 0 || used < max_per_connection))
            .then(|| GiveBack { pool: self.http1.clone(), key, sender, used });
        Ok(response
            .map(|incoming| crate::body::from_hyper(Returning { inner: incoming, give_back })))
    }
}

/// What goes back to the pool when an answer ends.
struct GiveBack {
    pool: Arc<Mutex<HashMap<Key, Vec<Idle>>>>,
    key: Key,
    sender: http1::SendRequest<Body>,
    used: u32,
}

impl GiveBack {
    fn put(self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if pool.len() >= SWEEP_AT {
            pool.retain(|_, list| {
                list.retain(|i| !i.sender.is_closed() && now - i.since < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = pool.entry(self.key).or_default();
        if list.len() < IDLE_PER_ENDPOINT {
            list.push(Idle { sender: self.sender, used: self.used, since: now });
        }
    }
}

/// An HTTP/1.1 answer's body that returns its connection to the pool when
/// read to the end (no task per request to wait for that).
struct Returning {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl Drop for Returning {
    fn drop(&mut self) {
        // An answer with no body left to read (`Content-Length: 0`, a
        // `HEAD`) may never be polled to its end.
        if self.inner.is_end_stream()
            && let Some(g) = self.give_back.take()
        {
            g.put();
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some(g) = self.give_back.take() {
                    g.put();
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
