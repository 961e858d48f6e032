//! Bringing up a local cluster per test, named after the test.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use localmesh::{Cluster, ClusterSpec, Options};

pub use testkit::netns::is_root;

/// The directory holding the workspace's binaries (next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    for bin in ["controlplane", "ztunnel", "mesh-cni", "waypoint", "mesh-sample"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: build the workspace's binaries first (scripts/test.sh does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// Two nodes: `apps/sleep` (a client, no server) on node-a and `apps/echo`
/// (an echo server on 8080) on node-b, in an ambient namespace.
pub const APPS: &str = r#"
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

/// A cluster named `name` from YAML text; removed when dropped.
pub fn cluster(name: &str, yaml: &str) -> (Cluster, tempfile_dir::TempDir) {
    cluster_with(name, yaml, |_| {})
}

/// [`cluster`], with `tweak` applied to its options (other ztunnels on
/// some nodes, the agents' environment).
pub fn cluster_with(
    name: &str,
    yaml: &str,
    tweak: impl FnOnce(&mut Options),
) -> (Cluster, tempfile_dir::TempDir) {
    let docs = localmesh::spec::parse(yaml, name).unwrap();
    let spec = ClusterSpec::from_documents(docs).unwrap();
    let state = tempfile_dir::TempDir::new(name);
    let mut options = Options {
        name: name.into(),
        state_dir: state.path.clone(),
        bin_dir: bin_dir(),
        ztunnels: Default::default(),
        agent_env: Vec::new(),
        waypoint_env: Vec::new(),
    };
    tweak(&mut options);
    match Cluster::up(&spec, options) {
        Ok(c) => (c, state),
        Err(e) => {
            let logs = state.logs();
            panic!("cluster {name} did not come up: {e}\n{logs}");
        }
    }
}

/// Sends `data` from inside `from` to `to`, half-closes, returns the reply.
pub fn exchange(from: &str, to: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = localmesh::net::connect_from(from, to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    let sent = sender.join().map_err(|_| std::io::Error::other("sender panicked"))?;
    read?;
    sent?;
    Ok(out)
}

/// A ztunnel's Prometheus text, fetched from inside its node.
/// Runs `program args` inside network namespace `netns`; its stdout, and
/// whether it succeeded.
pub fn run_in_netns(netns: &str, program: &str, args: &[&str]) -> (String, bool) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
}

pub fn ztunnel_metrics(cluster: &Cluster, node: &str) -> String {
    let node = cluster.node(node).unwrap();
    localmesh::net::http_get(&node.netns, "127.0.0.1:15020".parse().unwrap(), "/metrics").unwrap().1
}

pub mod tempfile_dir {
    //! A state directory under /tmp removed on drop (after the cluster).
    use std::path::PathBuf;

    pub struct TempDir {
        pub path: PathBuf,
    }

    impl TempDir {
        pub fn new(name: &str) -> Self {
            // A stable path per test: the next run finds a killed run's
            // state.json there and stops what it left running.
            let path = std::env::temp_dir().join(format!("mesh-e2e-{name}"));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }

        /// Whether any component's whole log holds `needle`.
        pub fn logged(&self, needle: &str) -> bool {
            std::fs::read_dir(self.path.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains(needle)))
        }

        /// Every log, for failure messages.
        pub fn logs(&self) -> String {
            let mut out = String::new();
            if let Ok(entries) = std::fs::read_dir(self.path.join("logs")) {
                for e in entries.flatten() {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    out += &format!(
                        "--- {}\n{}\n",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            out
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `check` every 100 ms for up to `seconds`.
pub fn eventually(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {seconds} s waiting for: {what}");
}

/// Whether a connection from `from` to `to` carries an echo.
pub fn echoes(from: &str, to: SocketAddr) -> bool {
    exchange(from, to, b"ping").is_ok_and(|b| b == b"ping")
}

/// The sum of a metric's samples whose labels include all `labels`.
pub fn sample(metrics: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
