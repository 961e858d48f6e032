//! Workload certificates: one per identity that has pods on this node,
//! obtained from the CA, renewed at half their lifetime, retried with
//! backoff, dropped when the last pod with that identity leaves.
//!
//! Users hold a [`CertificateLease`] per pod; the certificate lives while
//! any lease for its identity does. Rotation publishes the new certificate
//! on a `watch` channel: new connections use it, open ones keep theirs.

mod provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hbone::WorkloadCertificate;
use mesh_core::Identity;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use xds::Backoff;

use crate::errors::error_chain;

pub use provider::{CertificateProvider, FetchError, GrpcCa, IMPERSONATED_IDENTITY};

/// Retry and wait settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateSettings {
    /// First retry delay after a failed request.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How long [`WorkloadCertificates::get`] waits for a first certificate.
    pub wait_timeout: Duration,
}

impl Default for CertificateSettings {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(10),
        }
    }
}

/// What is known about one identity's certificate.
#[derive(Debug, Clone, Default)]
pub struct CertificateState {
    /// The certificate in use, if one was obtained.
    pub current: Option<WorkloadCertificate>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Certificates obtained so far (1 after the first, +1 per rotation).
    pub issued: u64,
}

/// Why no certificate can be used now.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unavailable {
    /// Nothing holds a lease for this identity.
    #[error("no pod on this node runs as {0}")]
    NotTracked(Identity),
    /// No certificate arrived in time.
    #[error("no certificate for {identity} yet{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotYet {
        /// The identity.
        identity: Identity,
        /// The last failure.
        last_error: Option<String>,
    },
}

/// A summary for the admin endpoint.
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    /// The identity.
    pub identity: Identity,
    /// Pods holding it.
    pub leases: usize,
    /// The state.
    pub state: CertificateState,
}

/// Certificates by identity.
pub struct WorkloadCertificates {
    provider: Arc<dyn CertificateProvider>,
    settings: CertificateSettings,
    entries: Mutex<HashMap<Identity, Entry>>,
}

struct Entry {
    state: watch::Sender<CertificateState>,
    leases: usize,
    task: JoinHandle<()>,
}

/// Keeps one identity's certificate alive; dropping it releases it.
pub struct CertificateLease {
    owner: Arc<WorkloadCertificates>,
    identity: Identity,
}

impl WorkloadCertificates {
    /// Certificates from `provider`.
    pub fn new(provider: Arc<dyn CertificateProvider>, settings: CertificateSettings) -> Arc<Self> {
        Arc::new(Self { provider, settings, entries: Mutex::new(HashMap::new()) })
    }

    /// Starts (or joins) keeping `identity`'s certificate fresh. Must be
    /// called inside a Tokio runtime.
    pub fn acquire(self: &Arc<Self>, identity: &Identity) -> CertificateLease {
        let mut entries = self.entries();
        let entry = entries.entry(identity.clone()).or_insert_with(|| {
            let state = watch::Sender::new(CertificateState::default());
            let task = tokio::spawn(keep_fresh(
                self.provider.clone(),
                identity.clone(),
                state.clone(),
                self.settings,
            ));
            Entry { state, leases: 0, task }
        });
        entry.leases += 1;
        CertificateLease { owner: self.clone(), identity: identity.clone() }
    }

    fn release(&self, identity: &Identity) {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(identity) else { return };
        entry.leases -= 1;
        if entry.leases == 0 {
            if let Some(entry) = entries.remove(identity) {
                entry.task.abort();
            }
            info!(%identity, "no pod needs this identity any more; certificate dropped");
        }
    }

    /// Follows an identity's certificate (for servers that must swap their
    /// TLS configuration on rotation).
    pub fn watch(&self, identity: &Identity) -> Option<watch::Receiver<CertificateState>> {
        self.entries().get(identity).map(|e| e.state.subscribe())
    }

    /// The current, unexpired certificate, waiting up to the configured
    /// timeout for the first one.
    pub async fn get(&self, identity: &Identity) -> Result<WorkloadCertificate, Unavailable> {
        let mut rx =
            self.watch(identity).ok_or_else(|| Unavailable::NotTracked(identity.clone()))?;
        let usable = |s: &CertificateState| {
            s.current.as_ref().is_some_and(|c| c.info().not_after > SystemTime::now())
        };
        let found =
            match tokio::time::timeout(self.settings.wait_timeout, rx.wait_for(usable)).await {
                Ok(Ok(state)) => state.current.clone(),
                _ => None,
            };
        found.ok_or_else(|| Unavailable::NotYet {
            identity: identity.clone(),
            last_error: rx.borrow().last_error.clone(),
        })
    }

    /// Identities still waiting for their first certificate.
    pub fn pending(&self) -> usize {
        self.entries().values().filter(|e| e.state.borrow().current.is_none()).count()
    }

    /// Every tracked identity, sorted.
    pub fn statuses(&self) -> Vec<CertificateStatus> {
        let mut out: Vec<_> = self
            .entries()
            .iter()
            .map(|(identity, e)| CertificateStatus {
                identity: identity.clone(),
                leases: e.leases,
                state: e.state.borrow().clone(),
            })
            .collect();
        out.sort_by_key(|s| s.identity.to_string());
        out
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Updates are single map operations; a poisoned map is consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WorkloadCertificates {
    fn drop(&mut self) {
        for entry in self.entries().values() {
            entry.task.abort();
        }
    }
}

// === impl CertificateLease ===

impl CertificateLease {
    /// The identity held.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl Drop for CertificateLease {
    fn drop(&mut self) {
        self.owner.release(&self.identity);
    }
}

impl std::fmt::Debug for CertificateLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateLease").field("identity", &self.identity).finish()
    }
}

/// Requests, publishes, sleeps until half-life, repeats; backs off on
/// failure while the previous certificate (if any) stays in use.
async fn keep_fresh(
    provider: Arc<dyn CertificateProvider>,
    identity: Identity,
    state: watch::Sender<CertificateState>,
    settings: CertificateSettings,
) {
    let mut backoff = Backoff::new(settings.initial_backoff, settings.max_backoff);
    loop {
        match provider.fetch(&identity).await {
            Ok(cert) => {
                backoff.reset();
                let wait =
                    cert.refresh_at().duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                info!(%identity, serial = %cert.info().serial, renew_in = ?wait, "certificate issued");
                state.send_modify(|s| {
                    s.current = Some(cert);
                    s.last_error = None;
                    s.issued += 1;
                });
                // A CA that hands out certificates already past half-life
                // must not make us spin.
                tokio::time::sleep(wait.max(settings.initial_backoff)).await;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(%identity, error = %error_chain(&e), retry_in = ?delay, "certificate request failed");
                state.send_modify(|s| s.last_error = Some(error_chain(&e)));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Serves HBONE on `listener` with the certificate `certs` holds: waits
/// for the first, swaps the TLS configuration on every rotation (open
/// connections keep theirs; `configs` shares one configuration per
/// certificate), and stops at `stop` or when the certificate is no longer
/// tracked. Every proxy that terminates HBONE serves it this way.
pub async fn serve_hbone<H: hbone::ConnectHandler>(
    mut certs: watch::Receiver<CertificateState>,
    configs: &hbone::tls::ServerConfigs,
    handler: Arc<H>,
    settings: hbone::H2Settings,
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    // The listener is bound, so peers' connections queue until then.
    let first = tokio::select! {
        _ = stop.cancelled() => return,
        cert = certs.wait_for(|s| s.current.is_some()) => match cert {
            Ok(state) => state.current.clone(),
            Err(_) => return,
        },
    };
    let Some(first) = first else { return };
    let tls = match configs.get(&first, &[]) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the HBONE TLS configuration");
            return;
        }
    };
    let server = Arc::new(hbone::HboneServer::new(tls, handler, settings));
    let rotation = {
        let server = server.clone();
        async move {
            while certs.changed().await.is_ok() {
                let current = certs.borrow_and_update().current.clone();
                if let Some(cert) = current {
                    match configs.get(&cert, &[]) {
                        Ok(tls) => {
                            server.set_tls_config(tls);
                            tracing::info!(serial = %cert.info().serial, "HBONE certificate rotated");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "rotated certificate unusable; keeping the old one")
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = server.run(listener, stop.cancelled()) => {}
        _ = rotation => {}
    }
}

#[cfg(test)]
mod tests;
