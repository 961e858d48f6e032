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
