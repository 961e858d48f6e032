//! One pod served: its listeners, its HBONE client pool, its certificate
//! lease, and the tokens that stop its listeners and end its connections.

use std::sync::Arc;

use hbone::Pool;
use mesh_core::{Identity, IdentityError};
use proxy_core::certificates::CertificateLease;
use proxy_core::sockets::{FactoryDialer, SocketFactory};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::Shared;
use crate::original_dst::OriginalDst;

/// What the node agent says about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// The pod's uid as ZDS names it: its Kubernetes UID (what Istio's CNI
    /// sends), the key of the pods ztunnel serves.
    pub uid: String,
    /// Its workload's uid in the workload store
    /// (`<cluster id>//Pod/<namespace>/<name>`, as the control plane names
    /// pods).
    pub workload_uid: String,
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account (with the namespace and trust domain, its identity).
    pub service_account: String,
}

/// Why a pod could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Its namespace or service account cannot form an identity.
    #[error("pod {uid} has no valid identity")]
    Identity {
        /// The pod.
        uid: String,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// A listener could not be bound in the pod's namespace.
    #[error("could not listen on port {port} in pod {uid}'s network namespace")]
    Bind {
        /// The pod.
        uid: String,
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a pod's connection handlers need.
pub(crate) struct PodContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) spec: PodSpec,
    pub(crate) identity: Identity,
    pub(crate) sockets: Arc<dyn SocketFactory>,
    pub(crate) original_dst: Arc<dyn OriginalDst>,
    pub(crate) pool: Pool,
    /// Cancelled to end the pod's open connections.
    pub(crate) kill: CancellationToken,
    /// Set once the kernel refused a transparent socket (logged once).
    pub(crate) transparent_refused: std::sync::atomic::AtomicBool,
}

/// A pod being served.
pub(crate) struct RunningPod {
    spec: PodSpec,
    stop: CancellationToken,
    kill: CancellationToken,
    lease: CertificateLease,
    pool: Pool,
}

impl RunningPod {
    pub(crate) fn start(
        shared: Arc<Shared>,
        spec: PodSpec,
        sockets: Arc<dyn SocketFactory>,
        original_dst: Arc<dyn OriginalDst>,
    ) -> Result<Self, PodError> {
        let identity =
            Identity::new(&shared.config.trust_domain, &spec.namespace, &spec.service_account)
                .map_err(|source| PodError::Identity { uid: spec.uid.clone(), source })?;
        let ports = shared.config.ports;
        let bind = |port| {
            sockets.tcp_listener(port).map_err(|source| PodError::Bind {
                uid: spec.uid.clone(),
                port,
                source,
            })
        };
        let outbound = bind(ports.outbound)?;
        let plaintext = bind(ports.inbound_plaintext)?;
        let hbone = bind(ports.hbone)?;
        let dns = if shared.config.dns.enabled {
            Some(crate::dns::DnsSockets::bind(sockets.as_ref(), ports.dns).map_err(|source| {
                PodError::Bind { uid: spec.uid.clone(), port: ports.dns, source }
            })?)
        } else {
            None
        };
        let listen_ip = sockets.local_ip();
        let lease = shared.certs.acquire(&identity);
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        // One setting turns resumption on or off both ways: the tickets our
        // servers issue and the pools' use of theirs.
        let pool_config = hbone::PoolConfig {
            resume_sessions: shared.config.session_ticket_lifetime.is_some(),
            ..shared.config.pool.clone()
        };
        let pool = Pool::new(pool_config, Arc::new(FactoryDialer(sockets.clone())));
        let ctx = Arc::new(PodContext {
            shared,
            spec: spec.clone(),
            identity,
            sockets,
            original_dst,
            pool: pool.clone(),
            kill: kill.clone(),
            transparent_refused: Default::default(),
        });
        let span = info_span!("pod", uid = %spec.uid, name = %spec.name, ns = %spec.namespace);
        tokio::spawn(
            crate::outbound::serve(ctx.clone(), outbound, stop.clone()).instrument(span.clone()),
        );
        tokio::spawn(
            crate::inbound::serve_plaintext(ctx.clone(), plaintext, stop.clone())
                .instrument(span.clone()),
        );
        tokio::spawn(
            crate::inbound::serve_hbone(ctx.clone(), hbone, stop.clone()).instrument(span.clone()),
        );
        if let Some(dns) = dns {
            tokio::spawn(crate::dns::serve(ctx, dns, stop.clone()).instrument(span.clone()));
        }
        span.in_scope(|| info!(listen_ip = %listen_ip, "pod added"));
        Ok(Self { spec, stop, kill, lease, pool })
    }

    pub(crate) fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// The pod's HBONE client pool.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn stop_listeners(&self) {
        self.stop.cancel();
    }

    pub(crate) fn kill_token(&self) -> CancellationToken {
        self.kill.clone()
    }

    /// Closes the listeners now; drains connections in the background and
    /// releases the certificate when they are gone.
    pub(crate) fn stop(self, shared: Arc<Shared>) {
        self.stop.cancel();
        let Self { spec, kill, lease, .. } = self;
        tokio::spawn(async move {
            let deadline = shared.config.drain_deadline;
            let cut = shared.connections.drain(Some(&spec.uid), deadline, &kill).await;
            if cut > 0 {
                warn!(uid = %spec.uid, cut, "pod removed; connections still open at the drain deadline were ended");
            } else {
                info!(uid = %spec.uid, "pod removed; its connections are drained");
            }
            drop(lease);
        });
    }
}
