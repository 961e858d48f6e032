//! The mesh end to end: the real control plane, node agents and ztunnels
//! in a local cluster of network namespaces (root; CI runs as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::{cluster, exchange, is_root, ztunnel_metrics};

const APPS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: apps}
spec: {nodeName: node-a, serviceAccountName: sleep, containers: [{name: sleep, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: apps, labels: {app: echo}}
spec:
  nodeName: node-b
  serviceAccountName: echo
  containers: [{name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}]
"#;

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

#[test]
fn pod_to_pod_across_nodes_is_mutual_tls_with_both_identities() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let (c, state) = cluster("p2p", APPS);
    let sleep = c.pod("apps", "sleep").unwrap().clone();
    let echo = c.pod("apps", "echo").unwrap().clone();
    let data: Vec<u8> =
        (0..100_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let back = exchange(&sleep.netns, SocketAddr::new(echo.ip, 8080), &data)
        .unwrap_or_else(|e| panic!("exchange failed: {e}\n{}", state.logs()));
    assert_eq!(back.len(), data.len());
    assert!(sha256(&back) == sha256(&data), "100 MB intact through two ztunnels");
    let metrics = ztunnel_metrics(&c, "node-b");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/apps/sa/sleep\"")
                && l.contains("destination_principal=\"spiffe://cluster.local/ns/apps/sa/echo\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
        })
        .unwrap_or_else(|| panic!("no mTLS connection in node-b's metrics:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
}
