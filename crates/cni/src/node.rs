//! The agent process: cluster state in, reconciles out; the ZDS socket for
//! ztunnel; the plugin socket for the CNI plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_config::enrollment::{Mode, mode};
use mesh_config::files::{Snapshot, watch_dir};
use mesh_config::state::ClusterState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use zds::ZdsListener;

use crate::agent::Agent;
use crate::desired::captured;
use crate::plugin::{PluginReply, PluginRequest};
use crate::redirect;

/// Where pods and namespaces come from.
pub enum Source {
    /// A directory of Kubernetes YAML (the local mesh), polled.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// How often.
        poll: Duration,
    },
    /// The Kubernetes API.
    Kubernetes(kube::Client),
}

/// The process's settings.
pub struct NodeSettings {
    /// This node's name.
    pub node: String,
    /// The cluster id in workload uids.
    pub cluster_id: String,
    /// Pods and namespaces.
    pub source: Source,
    /// The ZDS listener for ztunnel.
    pub zds: ZdsListener,
    /// The plugin socket (Kubernetes), if any.
    pub plugin: Option<UnixListener>,
}

/// Runs until `shutdown`. Captures stay in place when the agent stops (pods
/// keep working through ztunnel); a restarted agent reconciles them.
pub async fn run(agent: Arc<Agent>, settings: NodeSettings, shutdown: CancellationToken) {
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    match settings.source {
        Source::Directory { dir, poll } => {
            tokio::spawn(watch_dir(dir, poll, tx));
        }
        Source::Kubernetes(client) => {
            // Only what the agent needs: Namespaces and its own node's Pods.
            tokio::spawn(mesh_config::kubernetes::watch_kinds(
                client,
                mesh_config::kubernetes::node_kinds(&settings.node),
                Duration::from_millis(200),
                tx,
            ));
        }
    }
    tokio::spawn(agent.clone().serve_zds(settings.zds));
    tokio::spawn(check_captures(agent.clone(), shutdown.clone()));
    if let Some(plugin) = settings.plugin {
        tokio::spawn(serve_plugin(agent.clone(), plugin, rx.clone(), settings.cluster_id.clone()));
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let snapshot = rx.borrow_and_update().clone();
        let desired = captured(&snapshot.state, &settings.node, &settings.cluster_id);
        agent.reconcile(&desired).await;
    }
}

/// How often every captured pod's rules are read back and repaired.
const CAPTURE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

async fn check_captures(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CAPTURE_CHECK_INTERVAL) => {}
        }
        agent.verify_captures().await;
    }
}

async fn serve_plugin(
    agent: Arc<Agent>,
    listener: UnixListener,
    state: watch::Receiver<Arc<Snapshot>>,
    cluster_id: String,
) {
    loop {
        let (stream, _) = hbone::accept::next_connection("cni plugin", || listener.accept()).await;
        tokio::spawn(plugin_request(agent.clone(), stream, state.clone(), cluster_id.clone()));
    }
}

async fn plugin_request(
    agent: Arc<Agent>,
    stream: UnixStream,
    mut state: watch::Receiver<Arc<Snapshot>>,
    cluster_id: String,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match serde_json::from_str::<PluginRequest>(&line) {
        Ok(request) => decide(&agent, &request, &mut state, &cluster_id).await,
        Err(e) => PluginReply { captured: false, error: Some(format!("unreadable request: {e}")) },
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

/// A new pod: enrolled ones get their rules now (before the pod starts) and
/// their namespace remembered; ztunnel gets them when they have an address.
async fn decide(
    agent: &Agent,
    request: &PluginRequest,
    state: &mut watch::Receiver<Arc<Snapshot>>,
    cluster_id: &str,
) -> PluginReply {
    let uid = format!("{cluster_id}//Pod/{}/{}", request.pod_namespace, request.pod_name);
    if request.command == "DEL" {
        agent.netns_cache().remove(&uid);
        return PluginReply::default();
    }
    // The pod was created in the API before the runtime called us; wait a
    // little for our view to catch up.
    let mut enrolled = None;
    for _ in 0..50 {
        enrolled = pod_mode(&state.borrow().state, &request.pod_namespace, &request.pod_name);
        if enrolled.is_some() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), state.changed()).await;
    }
    match enrolled {
        None => PluginReply {
            captured: false,
            error: Some(format!(
                "pod {}/{} is not known to the agent",
                request.pod_namespace, request.pod_name
            )),
        },
        Some(Mode::Ambient) => {
            let netns = PathBuf::from(&request.netns);
            let (path, backend, rules) = (netns.clone(), agent.backend(), agent.rules().clone());
            // iptables-restore / nft run on a blocking thread.
            let installed = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
                    .and_then(|f| redirect::install(&f, backend, &rules).map_err(|e| e.to_string()))
            })
            .await
            .unwrap_or_else(|e| Err(format!("installing the rules did not finish: {e}")));
            match installed {
                Ok(()) => {
                    agent.netns_cache().insert(&uid, netns);
                    info!(%uid, "new pod captured before start");
                    PluginReply { captured: true, error: None }
                }
                Err(reason) => {
                    warn!(%uid, %reason, "new enrolled pod could not be captured; refusing it");
                    agent.count_failure();
                    PluginReply { captured: false, error: Some(reason) }
                }
            }
        }
        Some(_) => PluginReply::default(),
    }
}

fn pod_mode(state: &ClusterState, namespace: &str, name: &str) -> Option<Mode> {
    let pod = state.pods.get(&(namespace.to_string(), name.to_string()))?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let annotations: BTreeMap<String, String> =
        pod.metadata.annotations.clone().unwrap_or_default();
    Some(mode(&state.namespace_labels(namespace), &labels, &annotations))
}

/// `/metrics` for the agent.
pub struct MetricsRoute(pub prometheus_client::registry::Registry);

impl proxy_core::http::Route for MetricsRoute {
    async fn respond(
        &self,
        _request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<proxy_core::http::Body> {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.0) {
            Ok(()) => proxy_core::http::text(http::StatusCode::OK, out),
            Err(e) => {
                proxy_core::http::text(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}
