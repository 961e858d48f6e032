//! The DNS proxy on each pod's port 15053 (UDP and TCP): answers A/AAAA
//! for service hostnames from the workload store, including the short forms
//! a pod's search domains would produce (`web`, `web.apps`,
//! `web.apps.svc`), and forwards everything else to the node's resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use proxy_core::sockets::{HostSockets, SocketFactory};
use proxy_core::store::WorkloadStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::pod::PodContext;

/// TTL of answers from the store: short, as endpoints and VIPs change.
const TTL: u32 = 30;
/// Largest DNS message over UDP we read.
const MAX_UDP: usize = 4096;
/// UDP queries one pod may have in flight; more are dropped (the client
/// retries), so a flood holds at most this many tasks and upstream sockets.
const MAX_QUERIES_IN_FLIGHT: usize = 256;
/// TCP connections one pod may hold open to its DNS proxy; more are closed.
const MAX_TCP_CONNECTIONS: usize = 64;
/// How long a TCP connection may sit between queries.
const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The pod's DNS sockets.
pub(crate) struct DnsSockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsSockets {
    pub(crate) fn bind(factory: &dyn SocketFactory, port: u16) -> std::io::Result<Self> {
        Ok(Self { udp: factory.udp_socket(port)?, tcp: factory.tcp_listener(port)? })
    }
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: forward the query as is.
    Forward,
    /// Unreadable, not even an id: drop it.
    Drop,
}

/// Answers `query` from the store if it names a service (`namespace` is
/// the asking pod's, for short names).
pub fn answer(
    store: &WorkloadStore,
    namespace: &str,
    cluster_domain: &str,
    query: &[u8],
) -> Answer {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Answer::Drop,
    };
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
        || request.queries.len() != 1
    {
        return Answer::Forward;
    }
    let question = &request.queries[0];
    let qtype = question.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return Answer::Forward;
    }
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let Some(addresses) = lookup(store, namespace, cluster_domain, name) else {
        return Answer::Forward;
    };
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(question.clone());
    let owner = question.name().clone();
    for ip in addresses {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
            // The other family: the name exists, no record of this type.
            _ => continue,
        };
        response.add_answer(Record::from_rdata(owner.clone(), TTL, rdata));
    }
    encode(response)
}

/// The VIPs of the service `name` refers to, trying the search-domain
/// expansions of the pod's namespace.
fn lookup(
    store: &WorkloadStore,
    namespace: &str,
    cluster_domain: &str,
    name: &str,
) -> Option<Vec<IpAddr>> {
    let dots = name.matches('.').count();
    let mut candidates = vec![name.to_string()];
    match dots {
        0 => candidates.push(format!("{name}.{namespace}.svc.{cluster_domain}")),
        1 => candidates.push(format!("{name}.svc.{cluster_domain}")),
        2 if name.ends_with(".svc") => candidates.push(format!("{name}.{cluster_domain}")),
        _ => {}
    }
    candidates.iter().find_map(|host| {
        let services = store.services_by_hostname(host);
        let service = services.first()?;
        let mut vips: Vec<IpAddr> = service.vips.iter().map(|v| v.address).collect();
        if vips.is_empty() {
            // A headless service: the addresses of its endpoints.
            vips = store
                .endpoints(&service.key())
                .iter()
                .flat_map(|e| e.workload.addresses.clone())
                .collect();
        }
        Some(vips)
    })
}

fn encode(message: Message) -> Answer {
    match message.to_vec() {
        Ok(bytes) => Answer::Reply(bytes),
        Err(_) => Answer::Drop,
    }
}

pub(crate) async fn serve(ctx: Arc<PodContext>, sockets: DnsSockets, stop: CancellationToken) {
    let DnsSockets { udp, tcp } = sockets;
    let udp = Arc::new(udp);
    let tcp_loop = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        let refused = hbone::accept::Refusals::new("DNS TCP connections", MAX_TCP_CONNECTIONS);
        async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = hbone::accept::next_connection("dns tcp", || tcp.accept()) => accepted,
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    refused.refuse();
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    serve_tcp(ctx, stream).await;
                    drop(permit);
                });
            }
        }
    };
    tokio::spawn(tcp_loop);
    let in_flight = Arc::new(Semaphore::new(MAX_QUERIES_IN_FLIGHT));
    let dropped = hbone::accept::Refusals::new("DNS queries in flight", MAX_QUERIES_IN_FLIGHT);
    let mut buffer = vec![0u8; MAX_UDP];
    loop {
        let (len, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            received = udp.recv_from(&mut buffer) => match received {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "DNS receive failed");
                    continue;
                }
            },
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped.refuse();
            continue;
        };
        let query = buffer[..len].to_vec();
        let ctx = ctx.clone();
        let udp = udp.clone();
        tokio::spawn(async move {
            if let Some(reply) = resolve(&ctx, &query, Transport::Udp).await {
                let _ = udp.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(ctx: Arc<PodContext>, mut stream: TcpStream) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = resolve(&ctx, &query, Transport::Tcp).await else { return };
        let Ok(reply_len) = u16::try_from(reply.len()) else { return };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// How a query arrived, and so how it is forwarded: a client that asked
/// over TCP (a truncated answer, or one too large for UDP) must get the
/// whole answer, which only TCP carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Datagrams.
    Udp,
    /// Length-prefixed messages on a stream.
    Tcp,
}

async fn resolve(ctx: &PodContext, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let dns = &ctx.shared.config.dns;
    match answer(&ctx.shared.store, &ctx.spec.namespace, &dns.cluster_domain, query) {
        Answer::Reply(bytes) => Some(bytes),
        Answer::Drop => None,
        Answer::Forward => {
            Some(forward(dns.upstream, dns.upstream_timeout, query, transport).await)
        }
    }
}

/// Asks the node's resolver, over the transport the query came on, from
/// ztunnel's own namespace (where the node's resolver is reachable);
/// SERVFAIL when it cannot.
async fn forward(
    upstream: Option<SocketAddr>,
    timeout: std::time::Duration,
    query: &[u8],
    transport: Transport,
) -> Vec<u8> {
    let id = if query.len() >= 2 { u16::from_be_bytes([query[0], query[1]]) } else { 0 };
    let servfail = || {
        Message::error_msg(id, OpCode::Query, ResponseCode::ServFail).to_vec().unwrap_or_default()
    };
    let Some(upstream) = upstream else { return servfail() };
    let unspecified =
        if upstream.is_ipv4() { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) };
    let sockets = HostSockets::new(unspecified);
    let attempt = async {
        match transport {
            Transport::Udp => forward_udp(&sockets, upstream, query).await,
            Transport::Tcp => forward_tcp(&sockets, upstream, query).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            warn!(%upstream, error = %e, "DNS forward failed");
            servfail()
        }
        Err(_) => {
            warn!(%upstream, "DNS forward timed out");
            servfail()
        }
    }
}

async fn forward_udp(
    sockets: &dyn SocketFactory,
    upstream: SocketAddr,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let socket = sockets.udp_socket(0)?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; MAX_UDP];
    loop {
        let n = socket.recv(&mut buffer).await?;
        // Only the reply to this query counts.
        if n >= 2 && buffer[..2] == query[..2] {
            buffer.truncate(n);
            return Ok(buffer);
        }
    }
}

async fn forward_tcp(
    sockets: &dyn SocketFactory,
    upstream: SocketAddr,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut stream = proxy_core::sockets::connect(sockets, upstream).await?;
    stream.write_u16(len).await?;
    stream.write_all(query).await?;
    let reply_len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
