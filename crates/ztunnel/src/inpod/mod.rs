//! In-pod mode: the node agent hands over pods and their network
//! namespaces over ZDS; ztunnel serves each from inside its namespace.
//!
//! On every (re)connection the agent replays every pod it captured, then
//! says `SnapshotSent`; pods ztunnel serves that the replay did not name are
//! removed then. Pods keep being served while the agent is away.

pub mod netns;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxy_core::readiness::ReadinessBlock;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use xds::Backoff;
use zds::{Payload, ZdsConnection, ZdsError};

use self::netns::{HostNetns, NetnsSockets};
use crate::original_dst::SoOriginalDst;
use crate::{PodSpec, Ztunnel};

/// Settings of the ZDS client.
#[derive(Debug, Clone)]
pub struct InpodConfig {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Mark on ztunnel's sockets in pods (exempted by the redirection rules).
    pub mark: Option<u32>,
}

/// Keeps a ZDS session with the agent until `shutdown`, reconnecting with
/// backoff. `ready` is released after the first snapshot.
pub async fn run(
    ztunnel: Arc<Ztunnel>,
    config: InpodConfig,
    host: HostNetns,
    ready: Option<ReadinessBlock>,
    shutdown: CancellationToken,
) {
    let mut ready = ready;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let session =
            Session { ztunnel: &ztunnel, config: &config, host: &host, ready: &mut ready };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session.run(&mut backoff) => result,
        };
        let delay = backoff.next_delay();
        match result {
            Err(ZdsError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                info!(socket = %config.socket.display(), ?delay, "node agent not listening yet")
            }
            Err(ZdsError::Closed) => {
                info!(?delay, "node agent closed the ZDS connection; reconnecting")
            }
            Err(e) => warn!(error = %e, ?delay, "ZDS session failed; reconnecting"),
            Ok(()) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

struct Session<'a> {
    ztunnel: &'a Arc<Ztunnel>,
    config: &'a InpodConfig,
    host: &'a HostNetns,
    ready: &'a mut Option<ReadinessBlock>,
}

impl Session<'_> {
    async fn run(self, backoff: &mut Backoff) -> Result<(), ZdsError> {
        let conn = ZdsConnection::connect(&self.config.socket).await?;
        info!(socket = %self.config.socket.display(), "connected to the node agent");
        backoff.reset();
        let mut snapshot: Option<HashSet<String>> = Some(HashSet::new());
        loop {
            let request = conn.next().await?;
            let error = match request.payload {
                Payload::Add(add) => {
                    let uid = add.uid.clone();
                    let result = self.add(add, request.netns);
                    if result.is_ok()
                        && let Some(seen) = snapshot.as_mut()
                    {
                        seen.insert(uid);
                    }
                    result.err()
                }
                Payload::Keep(keep) => {
                    if self.ztunnel.has_pod(&keep.uid) {
                        if let Some(seen) = snapshot.as_mut() {
                            seen.insert(keep.uid);
                        }
                        None
                    } else {
                        Some(format!("pod {} is not served here", keep.uid))
                    }
                }
                Payload::Del(del) => {
                    if !self.ztunnel.remove_pod(&del.uid) {
                        info!(uid = %del.uid, "asked to remove a pod that was not served");
                    }
                    None
                }
                Payload::SnapshotSent(_) => {
                    let seen = snapshot.take().unwrap_or_default();
                    for pod in self.ztunnel.pods() {
                        if !seen.contains(&pod.uid) {
                            info!(uid = %pod.uid, "pod missing from the agent's snapshot; removing");
                            self.ztunnel.remove_pod(&pod.uid);
                        }
                    }
                    self.ready.take();
                    None
                }
            };
            if let Some(e) = &error {
                warn!(error = %e, "ZDS request failed");
            }
            conn.ack(error).await?;
        }
    }

    fn add(
        &self,
        add: zds::AddWorkload,
        netns: Option<std::os::fd::OwnedFd>,
    ) -> Result<(), String> {
        let info = add.workload_info.ok_or("AddWorkload without workload_info")?;
        let netns = netns.ok_or("AddWorkload without a network namespace")?;
        let spec = PodSpec {
            uid: add.uid,
            workload_uid: format!(
                "{}//Pod/{}/{}",
                self.ztunnel.shared().config.cluster_id,
                info.namespace,
                info.name
            ),
            name: info.name,
            namespace: info.namespace,
            service_account: info.service_account,
        };
        let sockets = Arc::new(NetnsSockets::new(netns, self.host.clone(), self.config.mark));
        self.ztunnel
            .add_pod(spec, sockets, Arc::new(SoOriginalDst))
            .map_err(|e| proxy_core::errors::error_chain(&e))
    }
}
