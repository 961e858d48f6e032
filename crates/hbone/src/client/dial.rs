//! Opening the TCP connection under an HBONE connection. Injected, so that
//! proxies can dial from inside a pod's network namespace or with a socket
//! mark, and tests can count or fail dials.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpStream;

/// Opens TCP connections to HBONE servers.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr`.
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>>;
}

/// Dials from the current network namespace, with `TCP_NODELAY`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        })
    }
}
