//! Sockets created inside a pod's network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, for
//! life. So each socket is created after switching the current thread into
//! the pod's namespace, which is switched back right after; binding,
//! connecting and all I/O then happen from any thread. The switch is two
//! `setns` calls, cheaper than a thread per pod.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use proxy_core::sockets::{SocketFactory, listen_on, set_mark, tcp_socket_for};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

/// The node proxy's own namespace, to return to.
#[derive(Debug, Clone)]
pub struct HostNetns(Arc<File>);

impl HostNetns {
    /// The current thread's network namespace (call at start-up, before any
    /// switch).
    pub fn current() -> io::Result<Self> {
        Ok(Self(Arc::new(File::open("/proc/thread-self/ns/net")?)))
    }
}

/// A pod's namespace, and the mark ztunnel's own packets carry there so the
/// redirection rules let them through.
#[derive(Debug)]
pub struct NetnsSockets {
    pod: OwnedFd,
    host: HostNetns,
    mark: Option<u32>,
}

impl NetnsSockets {
    /// Sockets in the namespace `pod` (a `/proc/<pid>/ns/net` or
    /// `/var/run/netns/<name>` descriptor).
    pub fn new(pod: OwnedFd, host: HostNetns, mark: Option<u32>) -> Self {
        Self { pod, host, mark }
    }

    /// Runs `create` with the current thread inside the pod's namespace.
    /// The thread returns to the host's namespace however `create` ends,
    /// a panic included: it is a runtime worker that goes on serving.
    fn inside<T>(&self, create: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        setns(self.pod.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let _back = ReturnHome(&self.host);
        create()
    }
}

/// Puts the current thread back into the host's namespace when dropped.
struct ReturnHome<'a>(&'a HostNetns);

impl Drop for ReturnHome<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // This thread would keep serving from the pod's namespace; no
            // later socket could be trusted. Nothing sane is left to do.
            eprintln!("ztunnel: cannot return to the host network namespace: {e}; aborting");
            std::process::abort();
        }
    }
}

impl SocketFactory for NetnsSockets {
    fn tcp_listener(&self, port: u16) -> io::Result<TcpListener> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let socket = self.inside(|| tcp_socket_for(&addr))?;
        listen_on(socket, addr)
    }

    fn tcp_socket(&self, destination: &SocketAddr) -> io::Result<TcpSocket> {
        let socket = self.inside(|| tcp_socket_for(destination))?;
        if let Some(mark) = self.mark {
            set_mark(&socket, mark)?;
        }
        Ok(socket)
    }

    fn udp_socket(&self, port: u16) -> io::Result<UdpSocket> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let socket = self.inside(|| std::net::UdpSocket::bind(addr))?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    fn local_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}
