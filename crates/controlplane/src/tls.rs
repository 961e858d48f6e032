//! Serving gRPC over the mesh's TLS, with the caller's verified identity
//! available to handlers as a request extension ([`PeerInfo`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_core::Identity;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::debug;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to pick them up.
const ACCEPT_BACKLOG: usize = 128;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Their address.
    pub remote_addr: SocketAddr,
    /// The identity of the mesh certificate they presented, if any.
    pub identity: Option<Identity>,
}

/// A TLS connection accepted for gRPC.
pub struct MeshTlsStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for MeshTlsStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for MeshTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and completes TLS handshakes
/// concurrently (one slow client never holds up others), yielding
/// connections for `tonic::transport::Server::serve_with_incoming`.
/// Failed handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<MeshTlsStream, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server is gone: stop accepting (and release the port).
                _ = tx.closed() => return,
                accepted = hbone::accept::next_connection("grpc", || listener.accept()) => accepted,
            };
            let (tcp, remote_addr) = accepted;
            let acceptor = acceptor.clone();
            let conn_tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                let inner = match handshake {
                    Ok(Ok(inner)) => inner,
                    Ok(Err(e)) => {
                        debug!(%remote_addr, error = %hbone::TlsError::from_io(e), "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let identity = inner
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| hbone::tls::peer_identity(Some(certs)).ok());
                let info = PeerInfo { remote_addr, identity };
                let _ = conn_tx.send(Ok(MeshTlsStream { inner, info })).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
