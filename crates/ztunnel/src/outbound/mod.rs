//! Outbound: connections a pod makes, captured on 15001, planned, and
//! carried in HBONE or passed through.

/// The decision itself, shared with the other proxies (`l4`).
pub use l4::plan;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hbone::{ConnectError, ConnectRequest};
use proxy_core::connections::Direction;
use proxy_core::errors::error_chain;
use proxy_core::sockets;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use crate::pod::PodContext;
use crate::telemetry::{ConnectionFacts, Failure, Reporter};
use crate::tracked::report_failure;
use l4::plan::{Destination, Plan, PlanError, Source};

/// Accepts captured outbound connections until `stop`.
pub(crate) async fn serve(ctx: Arc<PodContext>, listener: TcpListener, stop: CancellationToken) {
    crate::accept::accept_loop(listener, stop, "outbound", move |client, peer| {
        handle(ctx.clone(), client, peer).instrument(debug_span!("outbound", %peer))
    })
    .await;
}

async fn handle(ctx: Arc<PodContext>, client: TcpStream, peer: SocketAddr) {
    let Some(original) = crate::accept::captured_destination(&ctx, &client) else {
        return;
    };
    if is_own_listener(&ctx, &client, original) {
        // Connecting to our own capture port would loop forever.
        warn!(%original, "connection to ztunnel's own capture port refused");
        return;
    }
    let shared = &ctx.shared;
    let source = Source {
        identity: ctx.identity.clone(),
        workload: shared.store.workload(&ctx.spec.workload_uid),
        network: shared.config.network.clone(),
    };
    let planned =
        plan::plan(&shared.store, &source, original, shared.config.peer_hbone_port, &mut |n| {
            shared.choose(n)
        });
    let mut facts = ConnectionFacts {
        reporter: Reporter::Source,
        source_addr: peer,
        source: source.workload.clone(),
        source_identity: Some(ctx.identity.clone()),
        destination_addr: original,
        destination: None,
        service: None,
        destination_identity: None,
        upstream: original,
        mtls: false,
    };
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => {
            let failure = match e {
                PlanError::UnknownPort { .. } => Failure::NoRoute,
                PlanError::NoHealthyEndpoint(_) | PlanError::WaypointNotFound(_) => {
                    Failure::NoHealthyUpstream
                }
            };
            debug!(error = %e, "refused");
            report_failure(&shared.metrics, &facts, failure, &e.to_string());
            return;
        }
    };
    match plan {
        Plan::Direct { upstream, destination } => {
            describe(&mut facts, &destination, upstream, false, None);
            let connect = sockets::connect(ctx.sockets.as_ref(), upstream);
            match tokio::time::timeout(shared.config.connect_timeout, connect).await {
                Ok(Ok(stream)) => {
                    splice(client, crate::tracked::open(&ctx, Direction::Outbound, stream, facts))
                        .await
                }
                Ok(Err(e)) => fail(&ctx, &facts, Failure::UpstreamConnect, &e.to_string()),
                Err(_) => fail(&ctx, &facts, Failure::UpstreamConnect, "connect timed out"),
            }
        }
        Plan::Tunnel { hbone, authority, identities, via_waypoint, peer_proxy, destination } => {
            describe(&mut facts, &destination, hbone, true, identities.first());
            let cert = match shared.certs.get(&ctx.identity).await {
                Ok(cert) => cert,
                Err(e) => return fail(&ctx, &facts, Failure::NoCertificate, &e.to_string()),
            };
            let request = ConnectRequest {
                forwarded_for: Some(peer),
                peer_proxy,
                // A waypoint names the client in its HTTP metrics from this.
                baggage: source
                    .workload
                    .as_deref()
                    .filter(|_| via_waypoint)
                    .map(proxy_core::telemetry::source_baggage),
                ..ConnectRequest::new(cert, hbone, identities, authority)
            };
            tunnel(&ctx, client, &request, facts).await;
        }
    }
}

/// Carries `client` in an HBONE tunnel; what the client already sent goes
/// out with the CONNECT.
async fn tunnel(
    ctx: &PodContext,
    client: TcpStream,
    request: &ConnectRequest,
    facts: ConnectionFacts,
) {
    // Read when the stream is about to open: after a new HBONE connection's
    // handshakes the client has long written its request.
    let (mut first_len, mut read_error) = (0u64, None);
    let read_first = || match ready_bytes(&client) {
        Ok(first) => {
            first_len = first.len() as u64;
            first
        }
        Err(e) => {
            read_error = Some(e);
            Bytes::new()
        }
    };
    let connect = ctx.pool.connect_with_first_bytes(request, read_first);
    let (failure, reason) =
        match tokio::time::timeout(ctx.shared.config.connect_timeout, connect).await {
            Ok(Ok(_)) if let Some(e) = read_error => {
                // Dropping the stream resets it; the server drops its upstream.
                debug!(error = %e, "client connection failed before the tunnel opened");
                return;
            }
            Ok(Ok(stream)) => {
                let mut upstream = crate::tracked::open(ctx, Direction::Outbound, stream, facts);
                upstream.count_sent(first_len);
                return splice(client, upstream).await;
            }
            Ok(Err(e)) => {
                let failure = match e {
                    ConnectError::Denied { .. } => Failure::Denied,
                    _ => Failure::UpstreamConnect,
                };
                (failure, error_chain(&e))
            }
            Err(_) => (Failure::UpstreamConnect, "tunnel timed out".to_string()),
        };
    // A failed tunnel is a reset, whether or not the client had sent
    // anything: an orderly close would let it take the failure for a
    // server that answered nothing (or, for a server-speaks-first
    // protocol, that hung up), never for a connection that did not happen.
    let _ = client.set_zero_linger();
    fail(ctx, &facts, failure, &reason);
}

fn describe(
    facts: &mut ConnectionFacts,
    destination: &Destination,
    upstream: SocketAddr,
    mtls: bool,
    identity: Option<&mesh_core::Identity>,
) {
    facts.destination = destination.workload.clone();
    facts.service = destination.service.clone();
    facts.upstream = upstream;
    facts.mtls = mtls;
    facts.destination_identity = identity.cloned();
}

fn fail(ctx: &PodContext, facts: &ConnectionFacts, failure: Failure, reason: &str) {
    debug!(%reason, "outbound connection failed");
    report_failure(&ctx.shared.metrics, facts, failure, reason);
}

/// Copies both ways until both sides are done (half-closes are passed on).
async fn splice<U: hbone::ChunkIo>(mut client: TcpStream, mut upstream: U) {
    if let Err(e) = hbone::splice(&mut client, &mut upstream).await {
        debug!(error = %e, "outbound connection ended with an error");
    }
}

/// What the client has already sent, without waiting: the tunnel's first
/// bytes, sent with the CONNECT (see `hbone::client`'s `open.rs`). Empty
/// when nothing has arrived yet (a server-speaks-first protocol, or a slow
/// client) or the client already half-closed; the copy loop picks up from
/// there either way.
fn ready_bytes(client: &TcpStream) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(hbone::splice::MIN_READ);
    match client.try_read_buf(&mut buf) {
        Ok(_) => Ok(buf.freeze()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Bytes::new()),
        Err(e) => Err(e),
    }
}

/// Whether `original` is one of this pod's own listeners.
fn is_own_listener(ctx: &PodContext, client: &TcpStream, original: SocketAddr) -> bool {
    client.local_addr().is_ok_and(|local| local == original)
        && ctx.shared.config.ports.is_own(original.port())
}
