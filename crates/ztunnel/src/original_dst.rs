//! Where a redirected connection was going before iptables sent it to us.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Reads the original destination of an accepted, redirected connection.
pub trait OriginalDst: Send + Sync + 'static {
    /// The address the client dialled.
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// `SO_ORIGINAL_DST` (IPv4) / `IP6T_SO_ORIGINAL_DST` (IPv6): what the
/// netfilter REDIRECT rule recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoOriginalDst;

impl OriginalDst for SoOriginalDst {
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let local = stream.local_addr()?;
        if local.is_ipv4() {
            let addr = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(addr.sin_port)))
        } else {
            let addr = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Ok(SocketAddr::new(IpAddr::V6(ip), u16::from_be(addr.sin6_port)))
        }
    }
}
