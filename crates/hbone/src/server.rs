//! The HBONE server: accepts mTLS + HTTP/2 connections, asks a handler what
//! to do with each CONNECT, and copies bytes both ways.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use mesh_core::Identity;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span};

use crate::accept::Refusals;
use crate::authority::{ForwardedFor, RequestError, parse_authority, parse_forwarded_for};
use crate::coalesce::Coalesce;
use crate::settings::{H2Settings, TLS_READ_BUFFER};
use crate::splice::ChunkIo;
use crate::stream::H2Stream;
use crate::tls::{self, TlsError};

/// An accepted connection after TLS.
/// An accepted connection's transport under HTTP/2: TLS, with writes
/// coalesced (`coalesce.rs`).
type TlsConn = Coalesce<tokio_rustls::server::TlsStream<tokio::io::BufReader<TcpStream>>>;

/// What the handler is asked about: one CONNECT from a verified peer.
#[derive(Debug, Clone)]
pub struct InboundConnect {
    /// The peer's verified SPIFFE identity.
    pub peer_identity: Identity,
    /// The peer's socket address (the HBONE client, not the original source).
    pub peer_addr: SocketAddr,
    /// Where the peer wants to go (`:authority`).
    pub target: SocketAddr,
    /// The original client, from `Forwarded: for=`.
    pub forwarded_for: Option<ForwardedFor>,
    /// W3C `baggage` header, passed on untouched.
    pub baggage: Option<String>,
    /// W3C `traceparent` header, passed on untouched.
    pub traceparent: Option<String>,
}

/// The handler's answer to a CONNECT.
pub enum Verdict<U> {
    /// 200: tunnel to this upstream.
    Accept(U),
    /// 401: policy denies it. The reason is logged, not sent.
    Deny(String),
    /// 503: the upstream could not be reached.
    Unavailable(String),
    /// 400: the request makes no sense for this server.
    BadRequest(String),
}

/// Decides what each CONNECT gets. Implemented by the proxies.
pub trait ConnectHandler: Send + Sync + 'static {
    /// What an accepted CONNECT's tunnel is handed to: an upstream byte
    /// stream to splice it with (any [`ChunkIo`]), or the handler's own
    /// [`Tunnel`] (an L7 proxy reading requests from it).
    type Upstream: Tunnel;

    /// Decides on one CONNECT. Connecting the upstream happens here, so a
    /// 200 is only sent once the upstream is open.
    fn handle(
        &self,
        request: InboundConnect,
    ) -> impl Future<Output = Verdict<Self::Upstream>> + Send;
}

/// What serves an accepted tunnel once the 200 is sent. Every byte stream
/// ([`ChunkIo`]) does: it is spliced with the tunnel. An L7 proxy
/// implements it on its own type and is given the tunnel itself, an
/// [`H2Stream`] (`AsyncRead + AsyncWrite`), to parse HTTP from with no
/// copy or in-memory pipe in between; what it learned from the
/// [`InboundConnect`] (peer identity, target, headers) it keeps in that
/// type.
pub trait Tunnel: Send + 'static {
    /// Serves the tunnel until it is done.
    fn serve(self, tunnel: H2Stream) -> impl Future<Output = ()> + Send;
}

impl<U: ChunkIo + Send + 'static> Tunnel for U {
    async fn serve(mut self, mut tunnel: H2Stream) {
        match crate::splice::splice(&mut tunnel, &mut self).await {
            Ok((from_client, to_client)) => debug!(from_client, to_client, "tunnel closed"),
            Err(e) => debug!(error = %e, "tunnel failed"),
        }
    }
}

/// Why a connection ended in error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS handshake failed.
    #[error("TLS handshake with {peer} failed")]
    Tls {
        /// Who connected.
        peer: SocketAddr,
        /// Why it failed.
        #[source]
        source: TlsError,
    },
    /// The handshakes took longer than allowed.
    #[error("handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    /// HTTP/2 failed (bad preface, protocol error, connection lost).
    #[error("HTTP/2 with {peer} failed")]
    H2 {
        /// Who connected.
        peer: SocketAddr,
        /// Why it failed.
        #[source]
        source: h2::Error,
    },
}

/// An HBONE server for one certificate. Cheap to share behind an `Arc`.
pub struct HboneServer<H> {
    tls: RwLock<TlsAcceptor>,
    handler: Arc<H>,
    settings: H2Settings,
    /// One permit per handshake in progress.
    pending: Arc<Semaphore>,
    /// Connections closed because too many handshakes were in progress.
    refused: Refusals,
}

impl<H: ConnectHandler> HboneServer<H> {
    /// A server presenting the certificate in `tls`. Servers may share one
    /// configuration (its clients then resume TLS sessions across them).
    pub fn new(tls: impl Into<Arc<ServerConfig>>, handler: Arc<H>, settings: H2Settings) -> Self {
        let pending = Arc::new(Semaphore::new(settings.max_pending_handshakes));
        let refused =
            Refusals::new("HBONE handshakes in progress", settings.max_pending_handshakes);
        Self {
            tls: RwLock::new(TlsAcceptor::from(tls.into())),
            handler,
            settings,
            pending,
            refused,
        }
    }

    /// Connections closed unserved because `max_pending_handshakes`
    /// handshakes were already in progress.
    pub fn handshakes_refused(&self) -> u64 {
        self.refused.count()
    }

    /// Replaces the TLS configuration (certificate rotation). Connections
    /// already open keep theirs.
    pub fn set_tls_config(&self, tls: impl Into<Arc<ServerConfig>>) {
        let acceptor = TlsAcceptor::from(tls.into());
        match self.tls.write() {
            Ok(mut guard) => *guard = acceptor,
            Err(poisoned) => *poisoned.into_inner() = acceptor,
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        match self.tls.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Accepts connections until `shutdown` completes. The caller binds the
    /// listener (port 0 in tests).
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = crate::accept::next_connection("hbone", || listener.accept()) => accepted,
            };
            let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                // Dropped: closed before a byte of TLS is read.
                self.refused.refuse();
                continue;
            };
            let server = self.clone();
            tokio::spawn(
                async move {
                    let served = match server.handshake(tcp, peer).await {
                        Ok((identity, conn)) => {
                            drop(permit);
                            server.serve_h2(identity, conn, peer).await
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        debug!(error = %e, cause = %error_chain(&e), "HBONE connection failed");
                    }
                }
                .instrument(info_span!("hbone_inbound", %peer)),
            );
        }
    }

    /// Serves one accepted TCP connection until it closes (with no bound on
    /// handshakes: [`HboneServer::run`] applies that).
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ServeError> {
        let (peer_identity, conn) = self.handshake(tcp, peer).await?;
        self.serve_h2(peer_identity, conn, peer).await
    }

    /// TLS and HTTP/2 handshakes, within `handshake_timeout`.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<(Identity, h2::server::Connection<TlsConn, Bytes>), ServeError> {
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            // The read buffer is allocated once the peer has sent something:
            // a connection that never speaks costs a socket and a task.
            // (A peek, not `readable()`, which reports a fresh socket ready.)
            let peeked = tcp
                .peek(&mut [0u8; 1])
                .await
                .map_err(|e| ServeError::Tls { peer, source: TlsError::from_io(e) })?;
            if peeked == 0 {
                let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(ServeError::Tls { peer, source: TlsError::from_io(closed) });
            }
            let tcp = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, tcp);
            let tls = self
                .acceptor()
                .accept(tcp)
                .await
                .map_err(|e| ServeError::Tls { peer, source: TlsError::from_io(e) })?;
            let (_, conn) = tls.get_ref();
            tls::check_alpn(conn.alpn_protocol())
                .map_err(|source| ServeError::Tls { peer, source })?;
            // A resumed session's identity comes with its validity check.
            let peer_identity = match tls::check_resumed(conn, None) {
                Ok(Some(identity)) => Ok(identity),
                Ok(None) => tls::peer_identity(conn.peer_certificates()),
                Err(e) => Err(e),
            }
            .map_err(|source| ServeError::Tls { peer, source })?;
            let h2 = self
                .h2_builder()
                .handshake::<_, Bytes>(Coalesce::new(tls, self.settings.coalesce_writes))
                .await
                .map_err(|source| ServeError::H2 { peer, source })?;
            Ok::<_, ServeError>((peer_identity, h2))
        };
        tokio::time::timeout(self.settings.handshake_timeout, handshake)
            .await
            .map_err(|_| ServeError::HandshakeTimeout(peer))?
    }

    /// Serves the CONNECTs of an established connection until it closes.
    async fn serve_h2(
        &self,
        peer_identity: Identity,
        mut conn: h2::server::Connection<TlsConn, Bytes>,
        peer: SocketAddr,
    ) -> Result<(), ServeError> {
        debug!(%peer_identity, "HBONE connection established");
        let keepalive = crate::keepalive::run(
            conn.ping_pong(),
            self.settings.keepalive_interval,
            self.settings.keepalive_timeout,
        );
        tokio::pin!(keepalive);
        loop {
            let next = tokio::select! {
                next = conn.accept() => next,
                _ = &mut keepalive => {
                    debug!("peer stopped answering pings; closing");
                    return Ok(());
                }
            };
            match next {
                None => return Ok(()),
                Some(Err(source)) => return Err(ServeError::H2 { peer, source }),
                Some(Ok((request, respond))) => {
                    let handler = self.handler.clone();
                    let peer_identity = peer_identity.clone();
                    tokio::spawn(
                        serve_stream(handler, peer_identity, peer, request, respond)
                            .in_current_span(),
                    );
                }
            }
        }
    }

    fn h2_builder(&self) -> h2::server::Builder {
        let s = &self.settings;
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(s.stream_window)
            .initial_connection_window_size(s.connection_window)
            .max_frame_size(s.max_frame_size)
            .max_concurrent_streams(s.max_concurrent_streams);
        builder
    }
}

/// Reads the CONNECT into what the handler needs, or the reason for a 400.
pub fn parse_connect<B>(
    request: &Request<B>,
    peer_identity: Identity,
    peer_addr: SocketAddr,
) -> Result<InboundConnect, RequestError> {
    if request.method() != Method::CONNECT {
        return Err(RequestError::NotConnect(request.method().to_string()));
    }
    let authority = request.uri().authority().ok_or(RequestError::MissingAuthority)?;
    let target = parse_authority(authority.as_str())?;
    let headers = request.headers();
    let text = |name: &'static str| -> Result<Option<String>, RequestError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| RequestError::BadHeader {
                    name,
                    why: "not visible ASCII".to_string(),
                })
            })
            .transpose()
    };
    let forwarded_for = match text("forwarded")? {
        Some(v) => parse_forwarded_for(&v)?,
        None => None,
    };
    Ok(InboundConnect {
        peer_identity,
        peer_addr,
        target,
        forwarded_for,
        baggage: text("baggage")?,
        traceparent: text("traceparent")?,
    })
}

async fn serve_stream<H: ConnectHandler>(
    handler: Arc<H>,
    peer_identity: Identity,
    peer: SocketAddr,
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let connect = match parse_connect(&request, peer_identity, peer) {
        Ok(connect) => connect,
        Err(e) => {
            debug!(error = %e, "bad CONNECT");
            reply(&mut respond, StatusCode::BAD_REQUEST);
            return;
        }
    };
    let target = connect.target;
    let upstream = match handler.handle(connect).await {
        Verdict::Accept(upstream) => upstream,
        Verdict::Deny(why) => {
            debug!(%target, %why, "CONNECT denied");
            reply(&mut respond, StatusCode::UNAUTHORIZED);
            return;
        }
        Verdict::Unavailable(why) => {
            debug!(%target, %why, "upstream unavailable");
            reply(&mut respond, StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
        Verdict::BadRequest(why) => {
            debug!(%target, %why, "CONNECT refused as bad request");
            reply(&mut respond, StatusCode::BAD_REQUEST);
            return;
        }
    };
    let send = match respond.send_response(Response::new(()), false) {
        Ok(send) => send,
        Err(e) => {
            debug!(error = %e, "client went away before the tunnel opened");
            return;
        }
    };
    let tunnel = H2Stream::new(send, request.into_body(), None);
    upstream.serve(tunnel).instrument(tracing::debug_span!("tunnel", %target)).await;
}

fn reply(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    // The stream ends with the response: nothing follows a refusal.
    let _ = respond.send_response(response, true);
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> Identity {
        "spiffe://td/ns/a/sa/b".parse().unwrap()
    }

    fn peer() -> SocketAddr {
        "10.0.0.1:5000".parse().unwrap()
    }

    fn connect(authority: &str) -> http::request::Builder {
        Request::builder().method(Method::CONNECT).uri(authority)
    }

    #[test]
    fn reads_a_full_connect() {
        let request = connect("10.0.0.2:8080")
            .header("forwarded", "for=\"10.0.0.9:1234\"")
            .header("baggage", "a=b")
            .header("traceparent", "00-abc-def-01")
            .body(())
            .unwrap();
        let got = parse_connect(&request, id(), peer()).unwrap();
        assert_eq!(got.target, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(got.forwarded_for.unwrap().port, Some(1234));
        assert_eq!(got.baggage.as_deref(), Some("a=b"));
        assert_eq!(got.traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(got.peer_identity, id());
    }

    #[test]
    fn refuses_what_is_not_an_hbone_connect() {
        let get = Request::get("http://10.0.0.2:80/").body(()).unwrap();
        assert!(matches!(parse_connect(&get, id(), peer()), Err(RequestError::NotConnect(_))));
        let host = connect("example.com:80").body(()).unwrap();
        assert!(matches!(parse_connect(&host, id(), peer()), Err(RequestError::BadAuthority(_))));
        let no_authority = Request::builder().method(Method::CONNECT).uri("/x").body(()).unwrap();
        assert!(matches!(
            parse_connect(&no_authority, id(), peer()),
            Err(RequestError::MissingAuthority)
        ));
        let binary = connect("10.0.0.2:80")
            .header("baggage", http::HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .body(())
            .unwrap();
        assert!(matches!(
            parse_connect(&binary, id(), peer()),
            Err(RequestError::BadHeader { name: "baggage", .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            method in "[A-Z]{1,8}",
            authority in "[0-9a-z.:\\[\\]]{0,30}",
            forwarded in proptest::collection::vec(any::<u8>(), 0..40),
            baggage in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut builder = Request::builder().method(method.as_str()).uri(authority.as_str());
            if let Ok(v) = http::HeaderValue::from_bytes(&forwarded) {
                builder = builder.header("forwarded", v);
            }
            if let Ok(v) = http::HeaderValue::from_bytes(&baggage) {
                builder = builder.header("baggage", v);
            }
            // Requests http itself refuses to build never reach us.
            if let Ok(request) = builder.body(())
                && let Ok(got) = parse_connect(&request, id(), peer())
            {
                prop_assert_eq!(request.method(), Method::CONNECT);
                prop_assert_ne!(got.target.port(), 0);
            }
        }
    }
}
