//! `meshbench-relay`: the floor under the mesh path, for `meshbench`.
//!
//! A TCP relay that does no work of its own — no TLS, no HTTP/2, no
//! policy, no telemetry — laid out like ztunnel's in-pod sockets: the
//! `outbound` relay listens on 15001 inside the client pod's namespace,
//! where the mesh's own capture rules redirect the pod's connections, and
//! opens a marked connection from that namespace to the `inbound` relay on
//! the destination pod's 15008; that one connects, marked, to the
//! destination from inside the destination pod's namespace. So a byte
//! crosses the same three TCP connections, namespaces, bridge and netfilter
//! rules as on the mesh path, and is copied through user space by each
//! relay (what any proxy that terminates TLS in user space must do at
//! least). Whatever the mesh path cannot beat, this one shows.
//!
//! Not a product: benchmark-only, root-only, IPv4 only. Its one line of
//! protocol (the original destination, sent first) exists because the
//! inbound relay must learn where to connect, as HBONE's CONNECT tells
//! ztunnel; a length-prefixed text address is the least there is to it.
//!
//! `meshbench-relay --netns NS --role outbound --listen 0.0.0.0:15001 --peer-port 15008`
//! `meshbench-relay --netns NS --role inbound --listen 0.0.0.0:15008`

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Bytes each relay copies per read, each way.
const BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    /// Accepts redirected connections; forwards to the peer's inbound relay.
    Outbound,
    /// Accepts the outbound relay's connections; connects to the destination.
    Inbound,
}

/// A zero-work TCP relay through the mesh path's hops (benchmark floor).
#[derive(Debug, Parser)]
struct Args {
    /// The pod's network namespace (under /var/run/netns).
    #[arg(long)]
    netns: String,
    #[arg(long, value_enum)]
    role: Role,
    #[arg(long)]
    listen: SocketAddr,
    /// Outbound: the inbound relay's port on the destination pod.
    #[arg(long, default_value = "15008")]
    peer_port: u16,
    /// Mark on the relay's own connections, so capture rules let them pass.
    #[arg(long, default_value = "1337")]
    mark: u32,
    /// Runtime worker threads (ztunnel's default: 2).
    #[arg(long, default_value = "2")]
    worker_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Die with whoever started us (meshbench or a test), even if it was
    // killed: a relay left behind would keep its pod's namespace alive.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .context("PR_SET_PDEATHSIG")?;
    let netns = args.netns.clone();
    // Threads the runtime starts inherit the namespace of the thread that
    // builds it, so every socket below lives in the pod's namespace.
    localmesh::net::in_netns(&netns, move || run(args))
        .with_context(|| format!("entering namespace {netns}"))?
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        loop {
            let (stream, from) = listener.accept().await?;
            let (role, mark, peer_port) = (args.role, args.mark, args.peer_port);
            tokio::spawn(async move {
                let result = match role {
                    Role::Outbound => outbound(stream, mark, peer_port).await,
                    Role::Inbound => inbound(stream, mark).await,
                };
                if let Err(e) = result {
                    eprintln!("meshbench-relay: connection from {from}: {e:#}");
                }
            });
        }
    })
}

async fn outbound(mut client: TcpStream, mark: u32, peer_port: u16) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let target = original_dst(&client).context("reading the original destination")?;
    let mut peer = connect_marked(SocketAddr::new(target.ip(), peer_port), mark).await?;
    let line = target.to_string();
    let mut header = vec![u8::try_from(line.len())?];
    header.extend_from_slice(line.as_bytes());
    peer.write_all(&header).await?;
    relay(&mut client, &mut peer).await
}

async fn inbound(mut peer: TcpStream, mark: u32) -> anyhow::Result<()> {
    let len = peer.read_u8().await.context("reading the destination's length")?;
    let mut line = vec![0u8; usize::from(len)];
    peer.read_exact(&mut line).await.context("reading the destination")?;
    let target: SocketAddr = std::str::from_utf8(&line)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an address: {:?}", String::from_utf8_lossy(&line)))?;
    peer.set_nodelay(true)?;
    let mut app = connect_marked(target, mark).await?;
    relay(&mut peer, &mut app).await
}

async fn relay(a: &mut TcpStream, b: &mut TcpStream) -> anyhow::Result<()> {
    tokio::io::copy_bidirectional_with_sizes(a, b, BUFFER, BUFFER).await?;
    Ok(())
}

async fn connect_marked(to: SocketAddr, mark: u32) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    setsockopt(&socket, sockopt::Mark, &mark).context("SO_MARK (root needed)")?;
    let stream = socket.connect(to).await.with_context(|| format!("connecting to {to}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Where the client meant to connect, as the REDIRECT rule recorded it.
fn original_dst(stream: &TcpStream) -> anyhow::Result<SocketAddr> {
    let addr = nix::sys::socket::getsockopt(stream, sockopt::OriginalDst)?;
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::new(ip.into(), u16::from_be(addr.sin_port)))
}
