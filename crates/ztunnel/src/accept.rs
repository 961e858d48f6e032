//! The accept loop every capture listener shares.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::pod::PodContext;

/// Accepts until `stop`, spawning `handle` per connection. Accept errors
/// (out of descriptors...) are logged and retried after a pause
/// (`hbone::accept`).
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = hbone::accept::next_connection(what, || listener.accept()) => accepted,
        };
        tokio::spawn(handle(stream, peer));
    }
}

/// Prepares a captured connection: `TCP_NODELAY` (we forward, the
/// application already chose when to send), and where it was going before
/// the redirect; `None`, logged, when the socket has no such address.
pub(crate) fn captured_destination(ctx: &PodContext, client: &TcpStream) -> Option<SocketAddr> {
    let _ = client.set_nodelay(true);
    match ctx.original_dst.original_dst(client) {
        Ok(addr) => Some(addr),
        Err(e) => {
            warn!(error = %e, "no original destination; closing");
            None
        }
    }
}
