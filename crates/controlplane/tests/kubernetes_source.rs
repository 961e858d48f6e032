//! The Kubernetes config source against the fake API server: what it
//! publishes, and when.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use controlplane::config::files::Snapshot;
use controlplane::config::kubernetes::watch_cluster;
use serde_json::json;
use testkit::FakeApiServer;
use tokio::sync::watch;

async fn client(api: &FakeApiServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_failed_first_pod_list_is_retried_not_published_as_no_pods() {
    let api = FakeApiServer::start(Duration::from_secs(30)).await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}));
    api.fail_lists("Pod", 1);

    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let task = tokio::spawn(watch_cluster(client(&api).await, Duration::from_millis(20), tx));
    // kube's watcher backs off about a second before retrying a list.
    tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.unwrap().unwrap();
    let first = rx.borrow_and_update().clone();
    assert_eq!(
        first.state.pods.len(),
        1,
        "the first snapshot has the pods the failed list missed, never an empty cluster"
    );
    task.abort();
}

#[tokio::test]
async fn a_node_agents_source_sees_namespaces_and_its_own_nodes_pods_only() {
    use controlplane::config::kubernetes::{node_kinds, watch_kinds};
    let api = FakeApiServer::start(Duration::from_secs(30)).await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}));
    for (pod, node) in [("here", "node-a"), ("there", "node-b")] {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "apps"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}));
    }
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "apps"}, "spec": {"ports": [{"port": 80}]}}));

    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let task = tokio::spawn(watch_kinds(
        client(&api).await,
        node_kinds("node-a"),
        Duration::from_millis(20),
        tx,
    ));
    tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.unwrap().unwrap();
    let snapshot = rx.borrow_and_update().clone();
    let pods: Vec<&str> = snapshot.state.pods.keys().map(|(_, name)| name.as_str()).collect();
    assert_eq!(pods, ["here"], "only node-a's pods are listed");
    assert!(snapshot.state.namespaces.contains_key("apps"));
    assert!(snapshot.state.services.is_empty(), "nothing cluster-wide beyond namespaces");
    task.abort();
}
