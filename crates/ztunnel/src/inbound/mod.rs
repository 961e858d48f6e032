//! Inbound: HBONE tunnels arriving on 15008 and plaintext captured on
//! 15006, authorized, then connected to the application inside the pod.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::{ConnectHandler, H2Settings, InboundConnect, Verdict};
use l4::authorize::{Refusal, authorize, trusted_source};
use l4::service;
use mesh_core::Workload;
use proxy_core::connections::Direction;
use proxy_core::sockets;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use crate::pod::PodContext;
use crate::telemetry::{ConnectionFacts, Failure, Reporter};
use crate::tracked::{Tracked, report_failure};

/// The decision itself, shared with the other proxies (`l4`).
pub use l4::authorize;

/// Serves HBONE once the pod's certificate is there; swaps the TLS
/// configuration on every rotation (open connections keep theirs). Pods of
/// one identity share their configuration (`Shared::server_tls`).
pub(crate) async fn serve_hbone(
    ctx: Arc<PodContext>,
    listener: TcpListener,
    stop: CancellationToken,
) {
    let Some(certs) = ctx.shared.certs.watch(&ctx.identity) else {
        warn!(identity = %ctx.identity, "no certificate tracked for the pod; HBONE not served");
        return;
    };
    let handler = Arc::new(InboundHandler { ctx: ctx.clone() });
    proxy_core::certificates::serve_hbone(
        certs,
        &ctx.shared.server_tls,
        handler,
        H2Settings::default(),
        listener,
        stop,
    )
    .await;
}

/// Decides on each CONNECT for one pod.
struct InboundHandler {
    ctx: Arc<PodContext>,
}

impl ConnectHandler for InboundHandler {
    type Upstream = Tracked<TcpStream>;

    async fn handle(&self, request: InboundConnect) -> Verdict<Self::Upstream> {
        let ctx = &self.ctx;
        let destination = destination_workload(ctx, request.target.ip());
        let source_addr = trusted_source(
            &ctx.shared.store,
            destination.as_deref(),
            &request.peer_identity,
            request.peer_addr,
            request.forwarded_for.as_ref(),
        );
        let source_ip = source_addr.ip();
        if let Some(w) = &destination
            && !w.addresses.contains(&request.target.ip())
        {
            return Verdict::BadRequest(format!(
                "{} is not an address of this pod",
                request.target
            ));
        }
        let source = ctx.shared.store.workload_by_ip(&ctx.shared.config.network, source_ip);
        let service = destination.as_deref().and_then(|d| {
            service::addressed_service(
                &ctx.shared.store,
                d,
                request.target.port(),
                source.as_deref(),
            )
        });
        let facts = ConnectionFacts {
            reporter: Reporter::Destination,
            source_addr,
            source,
            source_identity: Some(request.peer_identity.clone()),
            destination_addr: request.target,
            destination: destination.clone(),
            service,
            destination_identity: Some(ctx.identity.clone()),
            upstream: request.target,
            mtls: true,
        };
        if ctx.shared.config.ports.is_own(request.target.port()) {
            let reason = format!("{} is ztunnel's own port in the pod", request.target);
            report_failure(&ctx.shared.metrics, &facts, Failure::OwnPort, &reason);
            return Verdict::BadRequest(reason);
        }
        let decided = authorize(
            &ctx.shared.store,
            destination.as_deref(),
            &ctx.spec.workload_uid,
            Some(&request.peer_identity),
            source_ip,
            request.target,
        );
        if let Err(refusal) = decided {
            return refuse(ctx, &facts, refusal);
        }
        match connect_app(ctx, source_ip, request.target).await {
            Ok(stream) => Verdict::Accept(track(ctx, stream, facts)),
            Err(reason) => {
                report_failure(&ctx.shared.metrics, &facts, Failure::UpstreamConnect, &reason);
                Verdict::Unavailable(reason)
            }
        }
    }
}

/// Accepts captured plaintext until `stop`.
pub(crate) async fn serve_plaintext(
    ctx: Arc<PodContext>,
    listener: TcpListener,
    stop: CancellationToken,
) {
    crate::accept::accept_loop(listener, stop, "inbound plaintext", move |client, peer| {
        plaintext(ctx.clone(), client, peer).instrument(debug_span!("inbound_plaintext", %peer))
    })
    .await;
}

async fn plaintext(ctx: Arc<PodContext>, mut client: TcpStream, peer: SocketAddr) {
    let Some(target) = crate::accept::captured_destination(&ctx, &client) else {
        return;
    };
    let destination = destination_workload(&ctx, target.ip());
    let source = ctx.shared.store.workload_by_ip(&ctx.shared.config.network, peer.ip());
    let service = destination.as_deref().and_then(|d| {
        service::addressed_service(&ctx.shared.store, d, target.port(), source.as_deref())
    });
    let facts = ConnectionFacts {
        reporter: Reporter::Destination,
        source_addr: peer,
        source,
        source_identity: None,
        destination_addr: target,
        destination: destination.clone(),
        service,
        destination_identity: Some(ctx.identity.clone()),
        upstream: target,
        mtls: false,
    };
    // A connection straight to a listener of ours (not redirected: its
    // original destination is that listener) would be dialled again.
    if ctx.shared.config.ports.is_own(target.port()) {
        let reason = format!("{target} is ztunnel's own port in the pod");
        report_failure(&ctx.shared.metrics, &facts, Failure::OwnPort, &reason);
        return;
    }
    // STRICT mTLS arrives as a DENY policy for connections without a
    // principal, so plaintext is refused there by the same evaluation.
    let decided = authorize(
        &ctx.shared.store,
        destination.as_deref(),
        &ctx.spec.workload_uid,
        None,
        peer.ip(),
        target,
    );
    if let Err(refusal) = decided {
        let _ = refuse(&ctx, &facts, refusal);
        return;
    }
    match connect_app(&ctx, peer.ip(), target).await {
        Ok(stream) => {
            let mut upstream = track(&ctx, stream, facts);
            if let Err(e) = hbone::splice(&mut client, &mut upstream).await {
                debug!(error = %e, "inbound plaintext connection ended with an error");
            }
        }
        Err(reason) => {
            report_failure(&ctx.shared.metrics, &facts, Failure::UpstreamConnect, &reason);
        }
    }
}

fn destination_workload(ctx: &PodContext, ip: IpAddr) -> Option<Arc<Workload>> {
    let store = &ctx.shared.store;
    store.workload(&ctx.spec.workload_uid).or_else(|| {
        // Pods are keyed by uid; fall back to the address for stores that
        // name workloads differently.
        store.workload_by_ip(&ctx.shared.config.network, ip)
    })
}

fn refuse(
    ctx: &PodContext,
    facts: &ConnectionFacts,
    refusal: Refusal,
) -> Verdict<Tracked<TcpStream>> {
    let reason = refusal.to_string();
    debug!(%reason, "inbound connection refused");
    report_failure(&ctx.shared.metrics, facts, Failure::Denied, &reason);
    Verdict::Deny(reason)
}

/// Connects to the application at `target`, from `source`'s address when
/// source preservation is on (and the family matches); when the kernel
/// refuses the transparent socket (no `CAP_NET_ADMIN`), from the pod's own
/// address, logged once per pod.
async fn connect_app(
    ctx: &PodContext,
    source: IpAddr,
    target: SocketAddr,
) -> Result<TcpStream, String> {
    let transparent = (ctx.shared.config.preserve_source && source.is_ipv4() == target.is_ipv4())
        .then(|| sockets::transparent_socket(ctx.sockets.as_ref(), source, &target));
    let connect = async {
        match transparent {
            Some(Ok(socket)) => socket.connect(target).await,
            Some(Err(e)) => {
                if !ctx.transparent_refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    warn!(error = %e, "cannot connect to the application from the client's address; connecting from the pod's own");
                }
                sockets::connect(ctx.sockets.as_ref(), target).await
            }
            None => sockets::connect(ctx.sockets.as_ref(), target).await,
        }
    };
    match tokio::time::timeout(ctx.shared.config.connect_timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("could not connect to the application at {target}: {e}")),
        Err(_) => Err(format!("connecting to the application at {target} timed out")),
    }
}

fn track(ctx: &PodContext, stream: TcpStream, facts: ConnectionFacts) -> Tracked<TcpStream> {
    crate::tracked::open(ctx, Direction::Inbound, stream, facts)
}
