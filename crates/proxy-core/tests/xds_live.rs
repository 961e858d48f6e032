//! The workload store fed by a real delta-ADS stream: additions, changes,
//! removals and a bad resource arrive live, without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_core::Address;
use mesh_core::policy::{Action, Match, StringMatch};
use mesh_proto::type_url;
use prost_types::Any;
use proxy_core::store::{AddressHandler, AuthorizationHandler, WorkloadStore};
use testkit::model::{policy, workload};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use xds::{DeltaAdsServer, SnapshotStore, XdsClient, XdsClientConfig};

fn address(a: &Address) -> Any {
    Any::from_msg(&mesh_proto::workload::Address::from(a)).unwrap()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn updates_reach_the_store_live() {
    let snapshots = SnapshotStore::new();
    let web =
        Address::Workload(Box::new(workload("web", "apps", "10.0.0.1".parse().unwrap()).build()));
    snapshots.put(type_url::ADDRESS, &web.resource_name(), address(&web));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = DeltaAdsServer::new(snapshots.clone());
    tokio::spawn(
        Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let store = WorkloadStore::new();
    let client = XdsClient::new(
        Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy(),
        XdsClientConfig::default(),
        vec![
            Box::new(AddressHandler(store.clone())),
            Box::new(AuthorizationHandler(store.clone())),
        ],
    );
    tokio::spawn(client.run(std::future::pending()));
    eventually("first workload", || store.workload("Kubernetes//Pod/apps/web").is_some()).await;

    // A change: the pod's IP.
    let moved =
        Address::Workload(Box::new(workload("web", "apps", "10.0.0.2".parse().unwrap()).build()));
    snapshots.put(type_url::ADDRESS, &moved.resource_name(), address(&moved));
    eventually("new IP", || store.workload_by_ip("", "10.0.0.2".parse().unwrap()).is_some()).await;
    assert!(store.workload_by_ip("", "10.0.0.1".parse().unwrap()).is_none());

    // A policy, and garbage that must not stop it.
    let deny = policy(
        "apps",
        "deny",
        Action::Deny,
        vec![Match { principals: vec![StringMatch::Presence], ..Match::default() }],
    );
    snapshots.put(
        type_url::AUTHORIZATION,
        "apps/garbage",
        Any { type_url: type_url::AUTHORIZATION.into(), value: vec![0xff; 3] },
    );
    snapshots.put(
        type_url::AUTHORIZATION,
        &deny.key(),
        Any::from_msg(&mesh_proto::security::Authorization::from(&deny)).unwrap(),
    );
    eventually("policy", || store.policies().len() == 1).await;

    // A removal.
    snapshots.remove(type_url::ADDRESS, &moved.resource_name());
    eventually("removal", || store.workload("Kubernetes//Pod/apps/web").is_none()).await;
}
