//! The node agent: keeps the captured pods of its node in step with the
//! cluster, and ztunnel in step with the captured pods.
//!
//! - `reconcile(desired)`: pods newly enrolled get rules in their namespace
//!   and are handed to ztunnel; pods no longer enrolled are taken back and
//!   their rules removed. A pod that should be captured but cannot be is
//!   logged, counted and listed (fail closed: it stays out of ztunnel, and
//!   the CNI plugin refuses to start new such pods).
//! - Each ztunnel connection gets the whole snapshot (every captured pod
//!   with its namespace, then `SnapshotSent`), then live changes.
//!
//! One lock orders everything, so a replay never interleaves with a change.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxy_core::errors::error_chain;
use tokio::sync::Mutex;
use tracing::{error, info, warn};
use zds::{WorkloadInfo, ZdsListener, ZdsPeer};

use crate::desired::CapturedPod;
use crate::locate::{NetnsCache, locate_at};
use crate::redirect;
use crate::rules::{Backend, RuleSettings};

/// What the agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Which tool installs rules.
    pub backend: Backend,
    /// The rules' ports, mark and exemptions.
    pub rules: RuleSettings,
}

/// The agent's metrics.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    captured: Gauge,
    failures: Counter,
    repairs: Counter,
    ztunnel_connected: Gauge,
}

impl AgentMetrics {
    /// Registers under `mesh_cni_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("mesh_cni");
        r.register(
            "pods_captured",
            "Pods whose traffic is redirected to ztunnel",
            m.captured.clone(),
        );
        r.register(
            "capture_failures",
            "Pods that should be captured but could not be",
            m.failures.clone(),
        );
        r.register(
            "capture_repairs",
            "Captured pods whose rules had drifted (flushed, deleted) and were reinstalled",
            m.repairs.clone(),
        );
        r.register(
            "ztunnel_connected",
            "1 while ztunnel is connected over ZDS",
            m.ztunnel_connected.clone(),
        );
        m
    }
}

struct Captured {
    pod: CapturedPod,
    netns: File,
    /// Our rules as read back right after they were installed: what a
    /// check expects to find.
    rules: Vec<String>,
}

#[derive(Default)]
struct State {
    captured: BTreeMap<String, Captured>,
    failed: BTreeMap<String, String>,
    ztunnel: Option<ZdsPeer>,
}

/// The node agent.
pub struct Agent {
    config: AgentConfig,
    metrics: AgentMetrics,
    cache: NetnsCache,
    state: Mutex<State>,
    /// True once the first reconcile is done: before that, a snapshot to
    /// ztunnel would be empty and make it drop every pod it serves.
    reconciled: tokio::sync::watch::Sender<bool>,
}

impl Agent {
    /// An agent that has captured nothing yet.
    pub fn new(config: AgentConfig, metrics: AgentMetrics) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics,
            cache: NetnsCache::default(),
            state: Mutex::default(),
            reconciled: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The rules back end.
    pub fn backend(&self) -> Backend {
        self.config.backend
    }

    /// The rules' settings.
    pub fn rules(&self) -> &RuleSettings {
        &self.config.rules
    }

    /// Counts a pod that should have been captured and was not.
    pub fn count_failure(&self) {
        self.metrics.failures.inc();
    }

    /// Where the CNI plugin reported namespaces.
    pub fn netns_cache(&self) -> &NetnsCache {
        &self.cache
    }

    /// Brings captures in line with `desired` (uid → pod). Rules are
    /// installed and removed on blocking threads with no lock held (they
    /// run `iptables-restore`/`nft` and may scan `/proc`); ztunnel is told
    /// under the lock, so a replay never interleaves with a change: a pod
    /// leaving is taken from ztunnel before its rules go, a pod arriving is
    /// handed over only once its rules are in.
    pub async fn reconcile(&self, desired: &BTreeMap<String, CapturedPod>) {
        let (released, wanted) = {
            let mut state = self.state.lock().await;
            let gone: Vec<String> = state
                .captured
                .iter()
                .filter(|(uid, c)| desired.get(*uid) != Some(&c.pod))
                .map(|(uid, _)| uid.clone())
                .collect();
            let mut released = Vec::new();
            for uid in gone {
                if let Some(captured) = self.take_back(&mut state, &uid).await {
                    released.push((uid, captured.netns));
                }
            }
            state.failed.retain(|uid, _| desired.contains_key(uid));
            let wanted: Vec<CapturedPod> = desired
                .iter()
                .filter(|(uid, _)| !state.captured.contains_key(*uid))
                .map(|(_, pod)| pod.clone())
                .collect();
            (released, wanted)
        };
        for (uid, netns) in released {
            let backend = self.config.backend;
            let removed =
                tokio::task::spawn_blocking(move || redirect::remove(&netns, backend)).await;
            match removed {
                Ok(Ok(())) => info!(%uid, "pod released"),
                Ok(Err(e)) => {
                    warn!(%uid, error = %error_chain(&e), "could not remove the pod's rules (namespace gone?)")
                }
                Err(e) => warn!(%uid, error = %e, "removing the pod's rules did not finish"),
            }
            self.cache.remove(&uid);
        }
        let mut installed = Vec::new();
        for pod in wanted {
            let known = pod.netns.clone().or_else(|| self.cache.get(&pod.uid));
            let (backend, settings) = (self.config.backend, self.config.rules.clone());
            let target = pod.clone();
            let result =
                tokio::task::spawn_blocking(move || install(&target, known, backend, &settings))
                    .await
                    .unwrap_or_else(|e| Err(format!("installing the rules did not finish: {e}")));
            installed.push((pod, result));
        }
        let mut state = self.state.lock().await;
        for (pod, result) in installed {
            match result {
                Ok((netns, rules)) => self.hand_over(&mut state, &pod, netns, rules).await,
                Err(reason) => {
                    error!(uid = %pod.uid, %reason, "pod should be captured but could not be");
                    self.metrics.failures.inc();
                    state.failed.insert(pod.uid.clone(), reason);
                }
            }
        }
        self.metrics.captured.set(state.captured.len() as i64);
        self.reconciled.send_replace(true);
    }

    /// Records a pod whose rules are in and hands it to ztunnel.
    async fn hand_over(
        &self,
        state: &mut State,
        pod: &CapturedPod,
        netns: File,
        rules: Vec<String>,
    ) {
        info!(uid = %pod.uid, "pod captured");
        state.failed.remove(&pod.uid);
        if let Some(peer) = &state.ztunnel
            && let Err(e) = peer.add(&pod.uid, info(pod), netns.as_fd()).await
        {
            // Its traffic now goes to ztunnel's ports, which ztunnel does
            // not serve yet: closed, not open. The next snapshot retries.
            warn!(uid = %pod.uid, error = %e, "ztunnel did not take the pod");
            state.ztunnel = None;
            self.metrics.ztunnel_connected.set(0);
        }
        state.captured.insert(pod.uid.clone(), Captured { pod: pod.clone(), netns, rules });
    }

    /// Takes a pod back from ztunnel and from the captured set; its rules
    /// are removed by the caller, after.
    async fn take_back(&self, state: &mut State, uid: &str) -> Option<Captured> {
        let captured = state.captured.remove(uid)?;
        if let Some(peer) = &state.ztunnel
            && let Err(e) = peer.del(uid).await
        {
            warn!(%uid, error = %e, "ztunnel did not acknowledge the removal");
            state.ztunnel = None;
            self.metrics.ztunnel_connected.set(0);
        }
        Some(captured)
    }

    /// Reads back every captured pod's rules and reinstalls those that
    /// drifted from what was installed (a flushed chain, a deleted table):
    /// such a pod's traffic would leave in plaintext while it is counted as
    /// captured. Each repair is logged and counted; a pod that cannot be
    /// checked or repaired is logged and counted as a failure, and checked
    /// again next time. The reads run on blocking threads, with no lock
    /// held. Returns how many pods were repaired.
    pub async fn verify_captures(&self) -> usize {
        let expected: Vec<(String, File, Vec<String>)> = {
            let state = self.state.lock().await;
            state
                .captured
                .iter()
                .filter_map(|(uid, c)| {
                    Some((uid.clone(), c.netns.try_clone().ok()?, c.rules.clone()))
                })
                .collect()
        };
        let mut repaired = Vec::new();
        for (uid, netns, rules) in expected {
            let (backend, settings) = (self.config.backend, self.config.rules.clone());
            let checked = tokio::task::spawn_blocking(move || {
                redirect::repair_if_drifted(&netns, backend, &settings, &rules)
            })
            .await;
            match checked {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(rules))) => {
                    warn!(%uid, "the pod's capture rules had drifted; reinstalled");
                    self.metrics.repairs.inc();
                    repaired.push((uid, rules));
                }
                Ok(Err(e)) => {
                    error!(%uid, error = %error_chain(&e), "cannot check or repair the pod's capture rules");
                    self.metrics.failures.inc();
                }
                Err(e) => error!(%uid, error = %e, "capture check did not finish"),
            }
        }
        let count = repaired.len();
        let mut state = self.state.lock().await;
        for (uid, rules) in repaired {
            if let Some(captured) = state.captured.get_mut(&uid) {
                captured.rules = rules;
            }
        }
        count
    }

    /// Captured pods' uids, sorted.
    pub async fn captured(&self) -> Vec<String> {
        self.state.lock().await.captured.keys().cloned().collect()
    }

    /// Pods that should be captured but are not, with the reason.
    pub async fn failed(&self) -> BTreeMap<String, String> {
        self.state.lock().await.failed.clone()
    }

    /// Accepts ztunnel connections until the listener fails; each gets the
    /// full snapshot, then live changes.
    pub async fn serve_zds(self: Arc<Self>, mut listener: ZdsListener) {
        loop {
            let peer = match listener.accept().await {
                Ok(peer) => peer,
                Err(e) => {
                    // Accept errors (out of descriptors...) and failed
                    // hellos alike: pause rather than spin (`hbone::accept`).
                    warn!(error = %e, "ZDS connection refused");
                    tokio::time::sleep(hbone::accept::ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            // Hold the first snapshot until the agent knows its pods.
            let _ = self.reconciled.subscribe().wait_for(|done| *done).await;
            let mut state = self.state.lock().await;
            match replay(&state, &peer).await {
                Ok(n) => {
                    info!(pods = n, "ztunnel connected; snapshot sent");
                    state.ztunnel = Some(peer);
                    self.metrics.ztunnel_connected.set(1);
                }
                Err(e) => {
                    warn!(error = %e, "snapshot to ztunnel failed; waiting for it to reconnect")
                }
            }
            drop(state);
            // Whatever happened while ztunnel was away (a node restart
            // flushing rules...), the pods handed over must be captured.
            self.verify_captures().await;
        }
    }
}

async fn replay(state: &State, peer: &ZdsPeer) -> Result<usize, zds::ZdsError> {
    for captured in state.captured.values() {
        peer.add(&captured.pod.uid, info(&captured.pod), captured.netns.as_fd()).await?;
    }
    peer.snapshot_sent().await?;
    Ok(state.captured.len())
}

/// Finds the pod's namespace and installs its rules (blocking); returns
/// the namespace and the rules as read back.
fn install(
    pod: &CapturedPod,
    known: Option<std::path::PathBuf>,
    backend: crate::rules::Backend,
    settings: &RuleSettings,
) -> Result<(File, Vec<String>), String> {
    let netns = locate_at(pod, known).map_err(|e| e.to_string())?;
    redirect::install(&netns, backend, settings).map_err(|e| error_chain(&e))?;
    let rules = redirect::installed(&netns, backend).unwrap_or_default();
    Ok((netns, rules))
}

fn info(pod: &CapturedPod) -> WorkloadInfo {
    WorkloadInfo {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        service_account: pod.service_account.clone(),
    }
}
