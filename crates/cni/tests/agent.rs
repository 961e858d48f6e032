//! The agent with real namespaces and a stand-in ztunnel on its ZDS socket:
//! enrollment flips on running pods, agent restart without duplicate
//! rules, full snapshot on every ztunnel (re)connection, failures reported.
//! Needs root (CI runs as root); without it the test says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cni::agent::{Agent, AgentConfig, AgentMetrics};
use cni::desired::CapturedPod;
use cni::redirect::installed;
use cni::rules::{Backend, RuleSettings};
use testkit::netns::{TestNetns, is_root};
use tokio::sync::mpsc;
use zds::{Payload, ZdsConnection, ZdsListener};

fn pod(name: &str, netns: Option<String>) -> CapturedPod {
    CapturedPod {
        uid: format!("Kubernetes//Pod/apps/{name}"),
        name: name.into(),
        namespace: "apps".into(),
        service_account: name.into(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        netns: netns.map(PathBuf::from),
    }
}

fn desired(pods: &[&CapturedPod]) -> BTreeMap<String, CapturedPod> {
    pods.iter().map(|p| (p.uid.clone(), (*p).clone())).collect()
}

/// A stand-in ztunnel: reconnects forever, reports what it is told, acks.
fn fake_ztunnel(socket: PathBuf) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok(conn) = ZdsConnection::connect(&socket).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            while let Ok(request) = conn.next().await {
                let event = match &request.payload {
                    Payload::Add(a) => format!("add {} netns={}", a.uid, request.netns.is_some()),
                    Payload::Del(d) => format!("del {}", d.uid),
                    Payload::Keep(k) => format!("keep {}", k.uid),
                    Payload::SnapshotSent(_) => "snapshot".into(),
                };
                let _ = tx.send(event);
                if conn.ack(None).await.is_err() {
                    break;
                }
            }
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
}

fn start(socket: &std::path::Path) -> (Arc<Agent>, tokio::task::JoinHandle<()>) {
    let config = AgentConfig { backend: Backend::Iptables, rules: RuleSettings::default() };
    let agent = Agent::new(config, AgentMetrics::default());
    let zds = ZdsListener::bind(socket).unwrap();
    let task = tokio::spawn(agent.clone().serve_zds(zds));
    (agent, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_flips_restarts_and_snapshots() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let web_ns = TestNetns::new("cni-agent-web");
    let api_ns = TestNetns::new("cni-agent-api");
    let web = pod("web", Some(web_ns.path()));
    let api = pod("api", Some(api_ns.path()));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ztunnel.sock");

    let (agent, zds_task) = start(&socket);
    agent.reconcile(&desired(&[&web])).await;
    assert_eq!(agent.captured().await, [web.uid.as_str()]);
    assert!(!installed(&web_ns.file(), Backend::Iptables).unwrap().is_empty());
    assert!(installed(&api_ns.file(), Backend::Iptables).unwrap().is_empty());

    // ztunnel connects: the whole snapshot, with the namespace attached.
    let mut events = fake_ztunnel(socket.clone());
    assert_eq!(next(&mut events).await, format!("add {} netns=true", web.uid));
    assert_eq!(next(&mut events).await, "snapshot");

    // api's namespace is labelled ambient while api runs: captured live.
    agent.reconcile(&desired(&[&web, &api])).await;
    assert_eq!(next(&mut events).await, format!("add {} netns=true", api.uid));
    assert!(!installed(&api_ns.file(), Backend::Iptables).unwrap().is_empty());

    // web leaves the mesh (label removed, or sidecar chosen): released live.
    agent.reconcile(&desired(&[&api])).await;
    assert_eq!(next(&mut events).await, format!("del {}", web.uid));
    assert!(installed(&web_ns.file(), Backend::Iptables).unwrap().is_empty(), "rules removed");

    // The agent restarts: rules are reconciled without duplicates, and
    // ztunnel, reconnecting, gets the full snapshot again.
    zds_task.abort();
    drop(agent);
    let (agent, _zds_task) = start(&socket);
    agent.reconcile(&desired(&[&api])).await;
    let rules = installed(&api_ns.file(), Backend::Iptables).unwrap();
    assert_eq!(rules.iter().filter(|l| l == &"-A OUTPUT -j MESH_OUTPUT").count(), 1, "{rules:#?}");
    assert_eq!(rules.iter().filter(|l| l.starts_with("-A OUTPUT")).count(), 2, "nat and mangle");
    assert_eq!(rules.iter().filter(|l| l.contains("lookup 100")).count(), 2, "{rules:#?}");
    assert_eq!(rules.iter().filter(|l| l.contains("--to-ports 15001")).count(), 1, "{rules:#?}");
    assert_eq!(next(&mut events).await, format!("add {} netns=true", api.uid));
    assert_eq!(next(&mut events).await, "snapshot");

    // A pod that should be captured but cannot be is reported, not handed over.
    let broken = pod("broken", Some("/nonexistent/netns".into()));
    agent.reconcile(&desired(&[&api, &broken])).await;
    let failed = agent.failed().await;
    assert!(failed[&broken.uid].contains("/nonexistent/netns"), "{failed:?}");
    assert_eq!(agent.captured().await, [api.uid.as_str()]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv()).await.is_err(),
        "nothing sent for it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_capture_rules_are_noticed_and_restored() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let web_ns = TestNetns::new("cni-drift-web");
    let web = pod("web", Some(web_ns.path()));
    let dir = tempfile::tempdir().unwrap();
    let (agent, _zds) = start(&dir.path().join("ztunnel.sock"));
    agent.reconcile(&desired(&[&web])).await;
    let before = installed(&web_ns.file(), Backend::Iptables).unwrap();
    assert!(!before.is_empty());
    assert_eq!(agent.verify_captures().await, 0, "nothing drifted yet");

    // Someone flushes the pod's mesh chain: its traffic would leave in plaintext.
    cni::netns_exec::run_in(
        &web_ns.file(),
        "iptables",
        &["-t", "nat", "-F", cni::rules::OUTPUT_CHAIN],
        "",
    )
    .unwrap();
    assert_ne!(installed(&web_ns.file(), Backend::Iptables).unwrap(), before);

    assert_eq!(agent.verify_captures().await, 1, "the drift was repaired");
    assert_eq!(installed(&web_ns.file(), Backend::Iptables).unwrap(), before);
    assert_eq!(agent.verify_captures().await, 0, "and stays repaired");
}
