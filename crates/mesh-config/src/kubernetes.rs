//! Kubernetes as the config source: one watcher per kind, feeding the same
//! parsing as files, so a bad object is reported the same way and never
//! stops the rest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::files::Snapshot;
use super::last_valid::LastValid;
use super::objects::{Documents, parse_object};
use super::state::ClusterState;

/// One kind to watch, optionally narrowed by a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// A field selector (`spec.nodeName=node-a`), if any.
    pub fields: Option<String>,
}

/// (group, version, kind) of everything the model reads.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Namespace"),
    ("", "v1", "Pod"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "Node"),
    ("discovery.k8s.io", "v1", "EndpointSlice"),
    ("security.istio.io", "v1", "AuthorizationPolicy"),
    ("security.istio.io", "v1", "PeerAuthentication"),
    ("security.istio.io", "v1", "RequestAuthentication"),
    ("networking.istio.io", "v1", "ServiceEntry"),
    ("gateway.networking.k8s.io", "v1", "Gateway"),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
    ("networking.istio.io", "v1", "VirtualService"),
    ("networking.istio.io", "v1", "DestinationRule"),
];

/// Every kind the model reads, cluster-wide (the control plane's view).
pub fn all_kinds() -> Vec<Watched> {
    KINDS
        .iter()
        .map(|&(group, version, kind)| Watched { group, version, kind, fields: None })
        .collect()
}

/// What a node agent needs: Namespaces (their enrollment labels) and the
/// Pods of its own node, nothing cluster-wide beyond that.
pub fn node_kinds(node: &str) -> Vec<Watched> {
    vec![
        Watched { group: "", version: "v1", kind: "Namespace", fields: None },
        Watched {
            group: "",
            version: "v1",
            kind: "Pod",
            fields: Some(format!("spec.nodeName={node}")),
        },
    ]
}

type Key = (usize, String, String);

#[derive(Default)]
struct Shared {
    objects: Mutex<BTreeMap<Key, Value>>,
    /// Kinds that finished their first list (or cannot be listed at all).
    synced: AtomicUsize,
    dirty: Notify,
}

/// [`watch_kinds`] over [`all_kinds`]: the control plane's source.
pub async fn watch_cluster(
    client: kube::Client,
    debounce: Duration,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    watch_kinds(client, all_kinds(), debounce, tx).await;
}

/// Watches `kinds` and publishes a snapshot after each burst of changes
/// (waiting `debounce` to gather a burst), first once every kind has been
/// listed completely (a failed first list is retried, never taken for an
/// empty one; only a CRD kind the cluster does not serve counts as
/// listed). Runs until every receiver is dropped.
pub async fn watch_kinds(
    client: kube::Client,
    kinds: Vec<Watched>,
    debounce: Duration,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    let count = kinds.len();
    for (index, watched) in kinds.into_iter().enumerate() {
        let gvk = GroupVersionKind::gvk(watched.group, watched.version, watched.kind);
        let resource = ApiResource::from_gvk(&gvk);
        let mut config = watcher::Config::default();
        if let Some(fields) = &watched.fields {
            config = config.fields(fields);
        }
        tasks.push(tokio::spawn(watch_kind(
            client.clone(),
            index,
            resource,
            config,
            shared.clone(),
        )));
    }
    let mut last_valid = LastValid::default();
    loop {
        shared.dirty.notified().await;
        tokio::time::sleep(debounce).await;
        if shared.synced.load(Ordering::Acquire) < count {
            continue;
        }
        let mut snapshot = build(&shared);
        last_valid.apply(&mut snapshot.state, &mut snapshot.bad);
        info!(pods = snapshot.state.pods.len(), bad = snapshot.bad.len(), "cluster state changed");
        if tx.send(Arc::new(snapshot)).is_err() {
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
}

async fn watch_kind(
    client: kube::Client,
    index: usize,
    resource: ApiResource,
    config: watcher::Config,
    shared: Arc<Shared>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let stream = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut synced = false;
    let mut initial: Option<BTreeMap<Key, Value>> = None;
    let to_value = |object: DynamicObject| -> Option<(Key, Value)> {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone()?;
        let mut value = serde_json::to_value(&object).ok()?;
        // List items carry no apiVersion/kind: put them back for parsing.
        value["apiVersion"] = Value::String(resource.api_version.clone());
        value["kind"] = Value::String(resource.kind.clone());
        Some(((index, namespace, name), value))
    };
    let mark_synced = |synced: &mut bool| {
        if !*synced {
            *synced = true;
            shared.synced.fetch_add(1, Ordering::AcqRel);
        }
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial = Some(BTreeMap::new()),
            Ok(Event::InitApply(object)) => {
                if let (Some(buffer), Some((key, value))) = (initial.as_mut(), to_value(object)) {
                    buffer.insert(key, value);
                }
            }
            Ok(Event::InitDone) => {
                let fresh = initial.take().unwrap_or_default();
                let mut objects = shared.objects.lock().unwrap_or_else(|p| p.into_inner());
                objects.retain(|(kind, _, _), _| *kind != index);
                objects.extend(fresh);
                drop(objects);
                mark_synced(&mut synced);
                shared.dirty.notify_one();
            }
            Ok(Event::Apply(object)) => {
                if let Some((key, value)) = to_value(object) {
                    shared.objects.lock().unwrap_or_else(|p| p.into_inner()).insert(key, value);
                    shared.dirty.notify_one();
                }
            }
            Ok(Event::Delete(object)) => {
                if let Some((key, _)) = to_value(object) {
                    shared.objects.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                    shared.dirty.notify_one();
                }
            }
            Err(e) => {
                warn!(kind = %resource.kind, error = %e, "watch failed; retrying");
                // A kind is synced only by a complete first list: a failed
                // Pod list taken as "no pods" would withdraw every
                // workload. The exception is a kind the cluster does not
                // serve at all (an Istio or Gateway API CRD not installed):
                // it has no objects, and must not hold back the rest.
                if !synced && optional(&resource.group) && is_not_found(&e) {
                    info!(kind = %resource.kind, "kind not served by this cluster; treated as empty");
                    mark_synced(&mut synced);
                    shared.dirty.notify_one();
                }
            }
        }
    }
}

/// Kinds from CRDs a cluster may lack; core kinds are always served.
fn optional(group: &str) -> bool {
    !matches!(group, "" | "discovery.k8s.io")
}

fn is_not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

fn build(shared: &Shared) -> Snapshot {
    let objects = shared.objects.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut parsed = Vec::new();
    let mut bad = Vec::new();
    for ((_, namespace, name), value) in objects {
        let source = format!("kubernetes {namespace}/{name}");
        let mut documents = Documents::default();
        documents.collect(parse_object(value), &source);
        bad.extend(documents.bad);
        parsed.extend(documents.objects.into_iter().map(|o| (o, source.clone())));
    }
    let (state, duplicates) = ClusterState::from_objects(parsed);
    bad.extend(duplicates);
    Snapshot { state, bad, read_at: Some(std::time::SystemTime::now()), ..Snapshot::default() }
}
