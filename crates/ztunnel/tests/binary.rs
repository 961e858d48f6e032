//! The `ztunnel` binary: configuration errors are named all at once; a
//! valid configuration serves admin, metrics and readiness (not ready while
//! the control plane is unreachable), maps no libm, and stops on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn ztunnel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ztunnel"));
    cmd.env_clear();
    cmd
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn every_bad_value_is_named_at_once() {
    let output = ztunnel()
        .args(["--node-name", "node-a", "--root-cert", "/nonexistent/root.pem"])
        .args(["--control-plane-identity", "not-spiffe", "--xds-address", "nowhere"])
        .args(["--worker-threads", "0", "--pool-max-streams-per-connection", "0"])
        .args(["--tls-session-ticket-seconds", "604801"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "ROOT_CERT",
        "CONTROL_PLANE_IDENTITY",
        "XDS_ADDRESS",
        "WORKER_THREADS",
        "POOL_MAX_STREAMS_PER_CONNECTION",
        "TLS_SESSION_TICKET_SECONDS",
    ] {
        assert!(stderr.contains(name), "{name} missing from:\n{stderr}");
    }
}

#[test]
fn serves_its_endpoints_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, testkit::TestCa::new("cluster.local").root_pem()).unwrap();
    let mut child = ztunnel()
        .args(["--node-name", "node-a", "--root-cert", root.to_str().unwrap()])
        // Nobody listens there: the proxy must keep running, not ready.
        // Istio's variables, in Istio's forms.
        .env("XDS_ADDRESS", "https://127.0.0.1:9")
        .env("ENABLE_ORIG_SRC", "false")
        .env("CLUSTER_ID", "east")
        .args(["--dns-upstream", "127.0.0.1:53"])
        .args(["--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--readiness-addr", "127.0.0.1:0"])
        .args(["--zds-socket", dir.path().join("zds.sock").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    };
    let (status, body) = get(&addr("readiness"), "/healthz/ready");
    assert_eq!(status, 503);
    assert!(body.contains("xds") && body.contains("node agent snapshot"), "{body}");
    let (status, body) = get(&addr("admin"), "/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["pods"], serde_json::json!([]));
    assert_eq!(dump["config"]["ports"]["hbone"], 15008);
    assert_eq!(dump["config"]["dnsUpstream"], "127.0.0.1:53");
    assert_eq!(dump["config"]["preserveSource"], false);
    assert_eq!(dump["config"]["clusterId"], "east");
    let (status, _) = get(&addr("metrics"), "/metrics");
    assert_eq!(status, 200);
    // Its one maths function is its own (src/bin/ztunnel/pow.rs): the
    // loader mapped no libm, and the running process still computes.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    assert!(maps.contains("libc.so"), "the maps were read: {maps}");
    assert!(!maps.contains("libm.so"), "libm is mapped:\n{maps}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
