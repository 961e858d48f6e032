//! ztunnel: the node proxy of the secure overlay.
//!
//! For every enrolled pod on its node (handed over by the node agent over
//! ZDS, [`inpod`]), ztunnel listens *inside the pod's network namespace*:
//! outbound capture (15001), inbound plaintext (15006), inbound HBONE (15008)
//! and DNS (15053). Outbound connections are planned from the workload store
//! ([`outbound::plan`], `l4`'s plain data) and carried in HBONE tunnels to the
//! destination pod or its waypoint, or passed through unchanged when the
//! destination is not in the mesh. Inbound connections are checked against
//! L4 authorization policy and the waypoint binding before they reach the
//! application.
//!
//! It deliberately does no L7 processing (that is the waypoint's job) and
//! never reads the environment: the binary's `config.rs` does.

mod accept;
pub mod admin;
pub mod app;
pub mod config;
pub mod dns;
pub mod inbound;
pub mod inpod;
pub mod original_dst;
pub mod outbound;
pub mod pod;
/// Connection telemetry, shared with the other proxies (`proxy_core`).
pub use proxy_core::telemetry;
mod tracked;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use proxy_core::certificates::WorkloadCertificates;
use proxy_core::connections::ConnectionTracker;
use proxy_core::store::WorkloadStore;
use proxy_core::tcp_metrics::TcpMetrics;

pub use config::{DEFAULT_SESSION_TICKET_LIFETIME, DnsConfig, PodPorts, ProxyConfig};
pub use pod::{PodError, PodSpec};

/// What every pod's proxy shares.
pub struct Shared {
    /// Workloads, services, policies.
    pub store: Arc<WorkloadStore>,
    /// Certificates of the identities of pods on this node.
    pub certs: Arc<WorkloadCertificates>,
    /// Open connections.
    pub connections: Arc<ConnectionTracker>,
    /// Istio TCP metrics.
    pub metrics: TcpMetrics,
    /// Settings.
    pub config: ProxyConfig,
    /// HBONE server TLS configurations, one per pod identity: pods of one
    /// identity share it, so a client's session resumes across them.
    pub server_tls: hbone::tls::ServerConfigs,
    round_robin: AtomicUsize,
}

impl Shared {
    /// Shared state from its parts.
    pub fn new(
        store: Arc<WorkloadStore>,
        certs: Arc<WorkloadCertificates>,
        metrics: TcpMetrics,
        config: ProxyConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            certs,
            connections: ConnectionTracker::new(),
            metrics,
            server_tls: hbone::tls::ServerConfigs::new(config.session_ticket_lifetime),
            config,
            round_robin: AtomicUsize::new(0),
        })
    }

    /// Picks an index below `n`, round robin across all picks.
    pub fn choose(&self, n: usize) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }
}

/// The node proxy: shared state and the pods it serves.
pub struct Ztunnel {
    shared: Arc<Shared>,
    pods: Mutex<HashMap<String, pod::RunningPod>>,
}

impl Ztunnel {
    /// A node proxy serving no pod yet.
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self { shared, pods: Mutex::new(HashMap::new()) })
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Pods served, by uid, sorted.
    pub fn pods(&self) -> Vec<PodSpec> {
        let mut all: Vec<_> = self.lock().values().map(|p| p.spec().clone()).collect();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }

    /// A served pod's HBONE client pool (its connections and counters).
    pub fn pod_pool(&self, uid: &str) -> Option<hbone::Pool> {
        self.lock().get(uid).map(|p| p.pool().clone())
    }

    /// Whether a pod is served.
    pub fn has_pod(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Starts serving a pod: binds its listeners through `sockets` and
    /// starts accepting. A pod already served is left as it is.
    pub fn add_pod(
        &self,
        spec: PodSpec,
        sockets: Arc<dyn proxy_core::sockets::SocketFactory>,
        original_dst: Arc<dyn original_dst::OriginalDst>,
    ) -> Result<(), PodError> {
        if self.has_pod(&spec.uid) {
            return Ok(());
        }
        let running = pod::RunningPod::start(self.shared.clone(), spec, sockets, original_dst)?;
        self.lock().insert(running.spec().uid.clone(), running);
        Ok(())
    }

    /// Stops serving a pod: its listeners close at once; its open
    /// connections may finish until the drain deadline, then are ended.
    /// Returns whether the pod was served.
    pub fn remove_pod(&self, uid: &str) -> bool {
        let Some(running) = self.lock().remove(uid) else { return false };
        running.stop(self.shared.clone());
        true
    }

    /// Stops every pod and waits (up to the drain deadline) for their
    /// connections to end. Returns how many had to be cut.
    pub async fn shutdown(&self) -> usize {
        let pods: Vec<_> = self.lock().drain().map(|(_, p)| p).collect();
        let kill = tokio_util::sync::CancellationToken::new();
        for pod in &pods {
            pod.stop_listeners();
            let child = pod.kill_token();
            let kill = kill.clone();
            tokio::spawn(async move {
                kill.cancelled().await;
                child.cancel();
            });
        }
        let deadline = self.shared.config.drain_deadline;
        self.shared.connections.drain(None, deadline, &kill).await
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, pod::RunningPod>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }
}
