//! The ZDS handoff for real: a network namespace made by the test, its
//! descriptor passed over the agent's socket, ztunnel listening inside it;
//! snapshot replay after the agent reconnects. Needs root (CI runs as root);
//! without it the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use proxy_core::store::WorkloadStore;
use support::{FakeCa, Node};
use testkit::netns::{TestNetns, is_root};
use tokio_util::sync::CancellationToken;
use zds::{WorkloadInfo, ZdsError, ZdsListener};
use ztunnel::inpod::netns::HostNetns;
use ztunnel::inpod::{self, InpodConfig};

/// Whether something listens on 127.0.0.1:`port` inside the namespace.
fn listening(netns: &TestNetns, port: u16) -> bool {
    let ns = netns.file();
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
    .join()
    .unwrap()
}

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo { name: name.into(), namespace: "apps".into(), service_account: "web".into() }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_handed_over_are_served_inside_their_namespace_and_replay_removes_the_missing() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to create network namespaces");
        return;
    }
    let netns = TestNetns::new("zt-inpod");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ztunnel.sock");
    let mut agent = ZdsListener::bind(&socket).unwrap();

    let node = Node::new(WorkloadStore::new(), FakeCa::new());
    let ztunnel = node.ztunnel.clone();
    let shutdown = CancellationToken::new();
    let config = InpodConfig { socket: socket.clone(), mark: Some(1337) };
    tokio::spawn(inpod::run(
        ztunnel.clone(),
        config,
        HostNetns::current().unwrap(),
        None,
        shutdown.clone(),
    ));

    let peer = agent.accept().await.unwrap();
    let ns_file = netns.file();
    peer.add("uid-web", info("web"), ns_file.as_fd()).await.unwrap();
    // Adding the same pod again (a replay) is accepted and changes nothing.
    peer.add("uid-web", info("web"), ns_file.as_fd()).await.unwrap();
    peer.snapshot_sent().await.unwrap();
    assert!(ztunnel.has_pod("uid-web"));
    // ZDS names the pod by its Kubernetes UID, as Istio's CNI does; its
    // workload is the control plane's `<cluster>//Pod/<ns>/<name>`.
    let served = ztunnel.pods();
    assert_eq!(served[0].uid, "uid-web");
    assert_eq!(served[0].workload_uid, format!("Kubernetes//Pod/{}/web", served[0].namespace));
    for port in [15001, 15006, 15008, 15053] {
        assert!(listening(&netns, port), "port {port} listens inside the pod's namespace");
    }

    // Requests ztunnel cannot honour are acked with the reason.
    let refused = peer.keep("uid-unknown").await.unwrap_err();
    assert!(matches!(&refused, ZdsError::Refused(m) if m.contains("uid-unknown")), "{refused}");
    let bad = WorkloadInfo {
        name: "x".into(),
        namespace: "Not/A/Namespace".into(),
        service_account: "sa".into(),
    };
    let refused = peer.add("uid-bad", bad, ns_file.as_fd()).await.unwrap_err();
    assert!(
        matches!(&refused, ZdsError::Refused(m) if m.contains("no valid identity")),
        "{refused}"
    );

    // The agent restarts; its snapshot no longer lists the pod.
    drop(peer);
    let peer = agent.accept().await.unwrap();
    peer.snapshot_sent().await.unwrap();
    assert!(!ztunnel.has_pod("uid-web"), "a pod missing from the replay is removed");
    eventually("listeners closed", || !listening(&netns, 15008)).await;

    // A live add and delete.
    peer.add("uid-web", info("web"), ns_file.as_fd()).await.unwrap();
    assert!(listening(&netns, 15001));
    peer.del("uid-web").await.unwrap();
    assert!(!ztunnel.has_pod("uid-web"));
    eventually("listeners closed after delete", || !listening(&netns, 15001)).await;
    shutdown.cancel();
}
