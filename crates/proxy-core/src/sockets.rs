//! The sockets a proxy binds and dials through.
//!
//! Proxies never call `TcpListener::bind` or `TcpStream::connect`
//! themselves: a [`SocketFactory`] decides where sockets live. The node
//! proxy's factory creates them inside a pod's network namespace, with a
//! packet mark the redirection rules exempt; tests use [`HostSockets`] on a
//! loopback address and need no namespaces or iptables.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use hbone::client::Dialer;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Backlog of every listener.
const BACKLOG: u32 = 1024;

/// Creates a proxy's sockets.
pub trait SocketFactory: Send + Sync + 'static {
    /// A TCP listener on `port` of the factory's address.
    fn tcp_listener(&self, port: u16) -> io::Result<TcpListener>;

    /// An unconnected TCP socket able to reach `destination`.
    fn tcp_socket(&self, destination: &SocketAddr) -> io::Result<TcpSocket>;

    /// A UDP socket on `port` of the factory's address.
    fn udp_socket(&self, port: u16) -> io::Result<UdpSocket>;

    /// The address listeners bind (for logs and the admin endpoint).
    fn local_ip(&self) -> IpAddr;
}

/// Connects through `factory` with `TCP_NODELAY`.
pub async fn connect(factory: &dyn SocketFactory, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = factory.tcp_socket(&addr)?;
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// A TCP socket through `factory` for `addr` that will connect from
/// `source`'s address (port chosen by the kernel): a transparent socket
/// (`IP_TRANSPARENT`, needs `CAP_NET_ADMIN`), so the address need not be
/// local. Used to reach an application from its client's original address;
/// replies find their way back by the node agent's routing rules.
pub fn transparent_socket(
    factory: &dyn SocketFactory,
    source: IpAddr,
    addr: &SocketAddr,
) -> io::Result<TcpSocket> {
    if source.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {source} and destination {addr} are of different families"),
        ));
    }
    // A forged or odd source (a waypoint's `Forwarded: for=127.0.0.1`) must
    // not reach the application as one it may trust (its own loopback) or
    // one no client can have.
    if source.is_loopback() || source.is_unspecified() || source.is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {source} is not a client address to connect from"),
        ));
    }
    let socket = factory.tcp_socket(addr)?;
    socket.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&socket);
    if addr.is_ipv4() {
        sock.set_ip_transparent_v4(true)?
    } else {
        sock.set_ip_transparent_v6(true)?
    }
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket)
}

/// A listener with `SO_REUSEADDR` (restarts rebind at once) on `addr`, from
/// a socket created by the caller (possibly inside a namespace).
pub fn listen_on(socket: TcpSocket, addr: SocketAddr) -> io::Result<TcpListener> {
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A new TCP socket of the family of `addr`.
pub fn tcp_socket_for(addr: &SocketAddr) -> io::Result<TcpSocket> {
    if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
}

/// Sets `SO_MARK` (needs `CAP_NET_ADMIN`).
pub fn set_mark(socket: &impl std::os::fd::AsFd, mark: u32) -> io::Result<()> {
    socket2::SockRef::from(socket).set_mark(mark)
}

/// Sockets in the current network namespace, listening on one address.
#[derive(Debug, Clone, Copy)]
pub struct HostSockets {
    ip: IpAddr,
}

impl HostSockets {
    /// Listeners bind `ip` (e.g. a per-test loopback address).
    pub fn new(ip: IpAddr) -> Self {
        Self { ip }
    }
}

impl Default for HostSockets {
    fn default() -> Self {
        Self::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

impl SocketFactory for HostSockets {
    fn tcp_listener(&self, port: u16) -> io::Result<TcpListener> {
        let addr = SocketAddr::new(self.ip, port);
        listen_on(tcp_socket_for(&addr)?, addr)
    }

    /// Bound to the factory's address (when it has one of the
    /// destination's family), as a pod's own sockets carry the pod's
    /// address: peers see where a connection really comes from.
    fn tcp_socket(&self, destination: &SocketAddr) -> io::Result<TcpSocket> {
        let socket = tcp_socket_for(destination)?;
        if !self.ip.is_unspecified() && self.ip.is_ipv4() == destination.is_ipv4() {
            socket.bind(SocketAddr::new(self.ip, 0))?;
        }
        Ok(socket)
    }

    fn udp_socket(&self, port: u16) -> io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }
}

/// HBONE dials through a socket factory (from the source pod's namespace).
#[derive(Clone)]
pub struct FactoryDialer(pub Arc<dyn SocketFactory>);

impl Dialer for FactoryDialer {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + '_>> {
        Box::pin(connect(self.0.as_ref(), addr))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transparent_sockets_refuse_sources_no_client_has() {
        let factory = HostSockets::new("127.0.0.1".parse().unwrap());
        let target: SocketAddr = "10.0.0.9:80".parse().unwrap();
        for source in ["127.0.0.1", "127.8.9.10", "0.0.0.0", "224.0.0.1", "::1"] {
            let err = transparent_socket(&factory, source.parse().unwrap(), &target).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{source}");
        }
    }
}
