//! Real capture: two pod namespaces joined by a veth pair, the agent's
//! iptables rules in each, ztunnel (in-process) serving both over ZDS. A
//! client in one pod dials the other pod's address; the bytes go through
//! the redirect, ztunnel, an HBONE tunnel and back. Releasing the client pod
//! makes the same dial go direct. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cni::agent::{Agent, AgentConfig, AgentMetrics};
use cni::desired::CapturedPod;
use cni::rules::{Backend, RuleSettings};
use mesh_core::Address;
use nix::sched::{CloneFlags, setns};
use prometheus_client::registry::Registry;
use proxy_core::certificates::{CertificateSettings, WorkloadCertificates};
use proxy_core::store::WorkloadStore;
use proxy_core::tcp_metrics::TcpMetrics;
use testkit::TestCaProvider;
use testkit::model::workload;
use testkit::netns::{TestNetns, is_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use ztunnel::inpod::netns::HostNetns;
use ztunnel::inpod::{self, InpodConfig};
use ztunnel::{ProxyConfig, Shared, Ztunnel};

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().unwrap().success();
    assert!(ok, "ip {}", args.join(" "));
}

fn in_ns<T: Send + 'static>(ns: &TestNetns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = ns.file();
    std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn pod(name: &str, ns: &TestNetns, addr: &str) -> CapturedPod {
    CapturedPod {
        uid: format!("Kubernetes//Pod/apps/{name}"),
        name: name.into(),
        namespace: "apps".into(),
        service_account: name.into(),
        ips: vec![addr.parse().unwrap()],
        netns: Some(PathBuf::from(ns.path())),
    }
}

async fn echo_through(client_ns: &TestNetns, dst: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream =
        in_ns(client_ns, move || StdStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap());
    stream.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut out = Vec::new();
    let (_, read) =
        tokio::join!(write, tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)));
    read.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_pods_traffic_goes_through_ztunnel_in_mutual_tls() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let pid = std::process::id();
    let client_ns = TestNetns::new("cni-cap-client");
    let server_ns = TestNetns::new("cni-cap-server");
    let (vc, vs) = (format!("vc{}", pid % 100_000), format!("vs{}", pid % 100_000));
    ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vs]);
    ip(&["link", "set", &vc, "netns", &client_ns.0]);
    ip(&["link", "set", &vs, "netns", &server_ns.0]);
    for (ns, dev, addr) in [(&client_ns, &vc, "10.200.0.1/24"), (&server_ns, &vs, "10.200.0.2/24")]
    {
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", dev]);
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    }

    // The application: an echo server in the server pod.
    let app = in_ns(&server_ns, || StdListener::bind("0.0.0.0:8080").unwrap());
    app.set_nonblocking(true).unwrap();
    testkit::serve_echo(tokio::net::TcpListener::from_std(app).unwrap(), b"");

    // The control plane's view.
    let store = WorkloadStore::new();
    for (name, addr) in [("sleep", "10.200.0.1"), ("web", "10.200.0.2")] {
        store.insert(Address::Workload(Box::new(
            workload(name, "apps", addr.parse().unwrap()).service_account(name).build(),
        )));
    }

    // ztunnel, in-process, fed by the agent over ZDS.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ztunnel.sock");
    let mut registry = Registry::default();
    let metrics = TcpMetrics::register(&mut registry);
    let certs = WorkloadCertificates::new(TestCaProvider::new(), CertificateSettings::default());
    let config = ProxyConfig {
        dns: ztunnel::DnsConfig { enabled: false, ..Default::default() },
        ..Default::default()
    };
    let ztunnel = Ztunnel::new(Shared::new(store, certs, metrics, config));
    let agent = Agent::new(
        AgentConfig {
            backend: Backend::Iptables,
            rules: RuleSettings { probe_source: None, ..RuleSettings::default() },
        },
        AgentMetrics::default(),
    );
    tokio::spawn(agent.clone().serve_zds(zds::ZdsListener::bind(&socket).unwrap()));
    let shutdown = CancellationToken::new();
    tokio::spawn(inpod::run(
        ztunnel.clone(),
        InpodConfig { socket, mark: Some(1337) },
        HostNetns::current().unwrap(),
        None,
        shutdown.clone(),
    ));
    let client = pod("sleep", &client_ns, "10.200.0.1");
    let server = pod("web", &server_ns, "10.200.0.2");
    let both: BTreeMap<_, _> =
        [(client.uid.clone(), client.clone()), (server.uid.clone(), server.clone())].into();
    agent.reconcile(&both).await;
    for _ in 0..200 {
        if ztunnel.pods().len() == 2 && ztunnel.shared().certs.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ztunnel.pods().len(), 2, "both pods handed over");

    let dst: SocketAddr = "10.200.0.2:8080".parse().unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let back = echo_through(&client_ns, dst, data.clone()).await;
    assert!(back == data, "2 MB echoed intact through the capture");

    let text = || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    let mtls_line = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\"")
                    && l.contains("source_principal=\"spiffe://cluster.local/ns/apps/sa/sleep\"")
                    && l.contains("connection_security_policy=\"mutual_tls\"")
            })
            .map(str::to_string)
    };
    let line =
        mtls_line(&text()).unwrap_or_else(|| panic!("no mTLS connection reported:\n{}", text()));
    assert!(line.ends_with(" 1"), "{line}");

    // The client pod leaves the mesh: the same dial now goes direct.
    let only_server: BTreeMap<_, _> = [(server.uid.clone(), server.clone())].into();
    agent.reconcile(&only_server).await;
    // The server still captures inbound: plaintext from a released pod is
    // allowed under PERMISSIVE, on 15006.
    let back = echo_through(&client_ns, dst, b"direct".to_vec()).await;
    assert_eq!(back, b"direct");
    let after = text();
    assert!(mtls_line(&after).unwrap().ends_with(" 1"), "no new mTLS connection");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\"")
                && l.contains("connection_security_policy=\"none\"")),
        "{after}"
    );
    shutdown.cancel();
}
