//! `meshbench`: the mesh path against the direct path, in one run, side by
//! side, on a local cluster of network namespaces (root).
//!
//! `cargo run --release -p e2e --bin meshbench -- [--seconds 10] [--pin] [--json FILE]`
//!
//! Paths: direct across nodes (two pods outside the mesh), mesh on the same
//! node (one ztunnel), mesh across nodes (two ztunnels, HBONE), and the
//! relay floor across nodes (`meshbench-relay`: the mesh path's hops and
//! capture rules with a relay that does no work, what no proxy on these
//! hops can beat). Figures:
//! single-stream and 64-stream throughput, 64-byte request/response over
//! one connection and with a new connection each time, a brand-new HBONE
//! connection (TLS included) to first byte — in a running ztunnel, against
//! a new direct TCP connection, and right after a ztunnel restart — and each
//! ztunnel's memory and CPU seconds per GiB carried.
//!
//! `--compare-ztunnel PATH[:istio]` runs another ztunnel binary on two more
//! nodes (Istio's, configured by its environment, or an earlier build of
//! ours) and measures it as one more path across nodes in the same rounds,
//! printing ours / theirs for every figure it shares with ours.

mod measure;
mod targets;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use localmesh::{Cluster, ClusterSpec, Options};
use serde_json::json;

use measure::{Percentiles, ProcessStats, inside, process_stats};

/// Mesh vs direct, one run.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per throughput run.
    #[arg(long, default_value = "10")]
    seconds: f64,
    /// Request/response rounds.
    #[arg(long, default_value = "5000")]
    rounds: usize,
    /// Measure every path this many times, interleaved (direct, mesh,
    /// direct, mesh...), and report each figure's median: one run of
    /// this machine is noisy.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Pin ztunnels to CPU 0 and the load to CPU 1 (2-core results are
    /// bimodal without it).
    #[arg(long)]
    pin: bool,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Another ztunnel binary to measure beside ours on the same kind of
    /// hops (two more nodes run it): `PATH`, or `PATH:istio` for one
    /// configured by Istio's environment (Istio's ztunnel). With an earlier
    /// build of ours it is an A/B run.
    #[arg(long, value_name = "PATH[:istio]")]
    compare_ztunnel: Option<localmesh::cluster::NodeZtunnel>,
}

/// The compared ztunnel's two nodes and their pods (client on node-c,
/// servers on node-d), as the mesh pair is on node-a and node-b.
const COMPARED: &str = r#"
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: node-a}}
- {apiVersion: v1, kind: Node, metadata: {name: node-b}}
- {apiVersion: v1, kind: Node, metadata: {name: node-c}}
- {apiVersion: v1, kind: Node, metadata: {name: node-d}}
---
apiVersion: v1
kind: Namespace
metadata: {name: compared, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: compared}
spec: {nodeName: node-c, serviceAccountName: client, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: compared}
spec:
  nodeName: node-d
  serviceAccountName: server
  containers:
  - {name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}
  - {name: sink, image: none, command: [mesh-sample, sink, --port, "9000"]}
"#;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {nodeName: node-a, serviceAccountName: client, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server-local, namespace: mesh}
spec:
  nodeName: node-a
  serviceAccountName: server
  containers:
  - {name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}
  - {name: sink, image: none, command: [mesh-sample, sink, --port, "9000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: server-remote, namespace: mesh}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
  - {name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}
  - {name: sink, image: none, command: [mesh-sample, sink, --port, "9000"]}
"#;

/// Echo pods on node-b that nothing talks to until the new-connection
/// measurement: each is a pool key (destination address) node-a's ztunnel
/// has no HBONE connection for, so its first connection is a brand-new one
/// made by a process that has been carrying traffic. They run as the service
/// account node-a's client has been reaching on node-b all along (new pods
/// of a known service), so these connections resume a TLS session unless
/// resumption is off (`TLS_SESSION_TICKET_SECONDS=0` in meshbench's
/// environment reaches the ztunnels).
const FRESH_PODS: usize = 12;

fn cluster_yaml(compared: bool) -> String {
    let mut yaml = CLUSTER.to_string();
    if compared {
        yaml.push_str(COMPARED);
    }
    yaml.push_str(&e2e::pods::plain_pair("plain"));
    yaml.push_str(&e2e::floor::pods());
    for i in 0..FRESH_PODS {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: fresh-{i}, namespace: mesh}}\n\
             spec:\n  nodeName: node-b\n  serviceAccountName: server\n  containers:\n  \
             - {{name: echo, image: none, command: [mesh-sample, echo, --port, \"8080\"]}}\n"
        ));
    }
    yaml
}

/// CPU seconds a process spent per GiB carried, in user space and in the
/// kernel (which includes the network stack's work done on its behalf).
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerGib {
    user: f64,
    kernel: f64,
}

impl CpuPerGib {
    fn total(&self) -> f64 {
        self.user + self.kernel
    }
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_current_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// TLS sessions node-a's ztunnel's pools have resumed, from its admin
/// dump; `None` when it cannot be read.
fn sessions_resumed(node_netns: &str) -> Option<u64> {
    let dump = localmesh::net::ztunnel_admin_json(node_netns, "/config_dump").ok()?;
    let pods = dump["pods"].as_array()?;
    Some(pods.iter().filter_map(|p| p["hbonePool"]["tlsSessionsResumed"].as_u64()).sum())
}

fn pin_process(pid: u32, cpu: usize) {
    // Every thread of the process.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() {
                let mut set = nix::sched::CpuSet::new();
                if set.set(cpu).is_ok() {
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set);
                }
            }
        }
    }
}

/// Where the direct path, the mesh path across nodes and the relay floor
/// sit in `paths`.
const DIRECT: usize = 0;
const ACROSS: usize = 2;
const FLOOR: usize = 3;
/// A measured process: its label and pid.
type Process = (String, u32);

/// The compared ztunnel's path, when there is one.
const COMPARE: usize = 4;

/// Whether a ztunnel (by label) is the compared binary's (node-c, node-d).
fn is_compared(label: &str) -> bool {
    matches!(label, "ztunnel-node-c" | "ztunnel-node-d")
}

struct Path {
    name: &'static str,
    client_netns: String,
    echo: SocketAddr,
    sink: SocketAddr,
}

#[derive(Default, Clone, Copy)]
struct Figures {
    throughput: f64,
    parallel: f64,
    rr: Percentiles,
    rr_new: Percentiles,
}

impl Figures {
    /// Each figure's median over `rounds`, on its own.
    fn median(rounds: &[Figures]) -> Figures {
        let m = |f: &dyn Fn(&Figures) -> f64| measure::median(rounds.iter().map(f).collect());
        let p = |f: &dyn Fn(&Figures) -> Percentiles| Percentiles {
            p50: m(&|r| f(r).p50),
            p90: m(&|r| f(r).p90),
            p99: m(&|r| f(r).p99),
        };
        Figures {
            throughput: m(&|r| r.throughput),
            parallel: m(&|r| r.parallel),
            rr: p(&|r| r.rr),
            rr_new: p(&|r| r.rr_new),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("no bin dir")?.to_path_buf();
    let compared = args.compare_ztunnel.is_some();
    let spec =
        ClusterSpec::from_documents(localmesh::spec::parse(&cluster_yaml(compared), "meshbench")?)?;
    let state_dir = std::env::temp_dir().join(format!("meshbench-{}", std::process::id()));
    let options = Options {
        name: "bench".into(),
        state_dir: state_dir.clone(),
        bin_dir: bin_dir.clone(),
        ztunnels: args
            .compare_ztunnel
            .iter()
            .flat_map(|z| ["node-c", "node-d"].map(|n| (n.to_string(), z.clone())))
            .collect(),
        agent_env: Vec::new(),
        waypoint_env: Vec::new(),
    };
    let mut cluster = Cluster::up(&spec, options).context("building the cluster (root needed)")?;
    let pod = |ns: &str, name: &str| cluster.pod(ns, name).cloned().context(format!("{ns}/{name}"));
    let (mesh_client, plain_client) = (pod("mesh", "client")?, pod("plain", "client")?);
    let (local, remote, plain_remote) =
        (pod("mesh", "server-local")?, pod("mesh", "server-remote")?, pod("plain", "server")?);
    let (floor_client, floor_remote) =
        (pod(e2e::floor::NAMESPACE, "client")?, pod(e2e::floor::NAMESPACE, "server")?);
    let relay_floor = e2e::floor::RelayFloor::start(
        &bin_dir.join("meshbench-relay"),
        &floor_client,
        &floor_remote,
    )
    .context("starting the relay floor")?;
    let relays = relay_floor.pids();
    let mut paths = vec![
        Path {
            name: "direct, across nodes",
            client_netns: plain_client.netns.clone(),
            echo: SocketAddr::new(plain_remote.ip, 8080),
            sink: SocketAddr::new(plain_remote.ip, 9000),
        },
        Path {
            name: "mesh, same node",
            client_netns: mesh_client.netns.clone(),
            echo: SocketAddr::new(local.ip, 8080),
            sink: SocketAddr::new(local.ip, 9000),
        },
        Path {
            name: "mesh, across nodes",
            client_netns: mesh_client.netns.clone(),
            echo: SocketAddr::new(remote.ip, 8080),
            sink: SocketAddr::new(remote.ip, 9000),
        },
        Path {
            name: "relay floor, across nodes",
            client_netns: floor_client.netns.clone(),
            echo: SocketAddr::new(floor_remote.ip, 8080),
            sink: SocketAddr::new(floor_remote.ip, 9000),
        },
    ];
    if compared {
        let (client, server) = (pod("compared", "client")?, pod("compared", "server")?);
        paths.push(Path {
            name: "compared, across nodes",
            client_netns: client.netns.clone(),
            echo: SocketAddr::new(server.ip, 8080),
            sink: SocketAddr::new(server.ip, 9000),
        });
        for _ in 0..100 {
            if e2e::probe::first_byte(&client.netns, paths[COMPARE].echo).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Wait until the mesh carries traffic.
    for _ in 0..100 {
        if e2e::probe::first_byte(&mesh_client.netns, paths[2].echo).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ztunnels: Vec<(String, u32)> = cluster
        .state()
        .components
        .iter()
        .filter(|c| c.label.starts_with("ztunnel-"))
        .map(|c| (c.label.clone(), c.pid))
        .collect();
    let load_cpu = if args.pin {
        for (_, pid) in ztunnels.iter().chain(&relays) {
            pin_process(*pid, 0);
        }
        Some(1)
    } else {
        None
    };
    let idle: Vec<ProcessStats> = ztunnels.iter().map(|(_, pid)| process_stats(*pid)).collect();

    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); paths.len()];
    // CPU seconds (user, kernel) and bytes, per ztunnel, over every
    // across-nodes run.
    let (theirs, ours): (Vec<Process>, Vec<Process>) =
        ztunnels.iter().cloned().partition(|(label, _)| is_compared(label));
    let mut carried = vec![(0.0f64, 0.0f64, 0u64); ours.len()];
    let mut compared_carried = vec![(0.0f64, 0.0f64, 0u64); theirs.len()];
    // The same for the relays, over every relay-floor run.
    let mut relays_carried = vec![(0.0f64, 0.0f64, 0u64); relays.len()];
    // Each ztunnel's peak RSS (KiB) during each path's runs, when the peak
    // can be reset between paths (it can as root).
    let mut path_peaks = vec![vec![0u64; ztunnels.len()]; paths.len()];
    let mut peaks_by_path = true;
    for round in 1..=args.repeat {
        for (index, path) in paths.iter().enumerate() {
            eprintln!("measuring: {} (round {round} of {})", path.name, args.repeat);
            peaks_by_path &= ztunnels.iter().all(|(_, pid)| measure::reset_peak(*pid));
            let (echo, sink, secs, rounds_rr) = (path.echo, path.sink, args.seconds, args.rounds);
            // CPU per GiB is counted across nodes: by the ztunnels on the
            // mesh path, by the relays on the floor.
            let counted = match index {
                ACROSS => Some((&ours, &mut carried)),
                FLOOR => Some((&relays, &mut relays_carried)),
                COMPARE => Some((&theirs, &mut compared_carried)),
                _ => None,
            };
            let before: Vec<ProcessStats> = counted
                .iter()
                .flat_map(|(procs, _)| procs.iter().map(|(_, pid)| process_stats(*pid)))
                .collect();
            let (throughput, bytes) =
                inside(&path.client_netns, load_cpu, move || measure::throughput(sink, secs))?
                    .with_context(|| format!("{}: single-stream throughput", path.name))?;
            if let Some((procs, totals)) = counted {
                for ((total, (_, pid)), before) in totals.iter_mut().zip(procs).zip(&before) {
                    let after = process_stats(*pid);
                    total.0 += after.user_seconds - before.user_seconds;
                    total.1 += after.kernel_seconds - before.kernel_seconds;
                    total.2 += bytes;
                }
            }
            let parallel = inside(&path.client_netns, load_cpu, move || {
                measure::parallel_throughput(sink, 64, secs)
            })?
            .with_context(|| format!("{}: 64 streams", path.name))?;
            let rr = inside(&path.client_netns, load_cpu, move || {
                measure::rr_persistent(echo, rounds_rr)
            })?
            .with_context(|| format!("{}: request/response", path.name))?;
            let rr_new = inside(&path.client_netns, load_cpu, move || {
                measure::rr_new_connection(echo, rounds_rr / 5)
            })?
            .with_context(|| format!("{}: request/response on new connections", path.name))?;
            rounds[index].push(Figures { throughput, parallel, rr, rr_new });
            for (i, (_, pid)) in ztunnels.iter().enumerate() {
                let peak = process_stats(*pid).peak_kib;
                path_peaks[index][i] = path_peaks[index][i].max(peak);
            }
        }
    }
    let results: Vec<(&str, Figures)> =
        paths.iter().zip(&rounds).map(|(p, r)| (p.name, Figures::median(r))).collect();
    let per_gib =
        |procs: &[(String, u32)], totals: &[(f64, f64, u64)]| -> Vec<(String, CpuPerGib)> {
            procs
                .iter()
                .zip(totals)
                .map(|((label, _), (user, kernel, bytes))| {
                    let gib = (*bytes as f64 / (1u64 << 30) as f64).max(1e-9);
                    (label.clone(), CpuPerGib { user: user / gib, kernel: kernel / gib })
                })
                .collect()
        };
    let mut cpu_per_gib = per_gib(&ours, &carried);
    cpu_per_gib.extend(per_gib(&theirs, &compared_carried));
    let relay_cpu_per_gib = per_gib(&relays, &relays_carried);
    let mut peak: Vec<ProcessStats> = ztunnels.iter().map(|(_, pid)| process_stats(*pid)).collect();
    if peaks_by_path {
        // VmHWM now only covers the last path: the peak is the largest of all.
        for (i, p) in peak.iter_mut().enumerate() {
            p.peak_kib =
                path_peaks.iter().map(|by_ztunnel| by_ztunnel[i]).fold(idle[i].rss_kib, u64::max);
        }
    }

    // A brand-new HBONE connection in a running ztunnel: the first
    // connection to each fresh pod (its own pool key), against a new direct
    // TCP connection to the plain server timed the same way.
    let node_a = cluster.node("node-a").context("node-a")?.netns.clone();
    let resumed_before = sessions_resumed(&node_a);
    let mut fresh = Vec::new();
    for i in 0..FRESH_PODS {
        let ip = pod("mesh", &format!("fresh-{i}"))?.ip;
        fresh.push(e2e::probe::first_byte(&mesh_client.netns, SocketAddr::new(ip, 8080))?);
    }
    let resumed =
        sessions_resumed(&node_a).zip(resumed_before).map(|(after, before)| after - before);
    let fresh = Percentiles::of(fresh);
    let mut new_tcp = Vec::new();
    for _ in 0..FRESH_PODS {
        new_tcp.push(e2e::probe::first_byte(&plain_client.netns, paths[0].echo)?);
    }
    let new_tcp = Percentiles::of(new_tcp);

    // The first HBONE connection after a restart: restart the client's
    // ztunnel so its pool is empty, wait until it is ready, warm it on
    // another destination, then time connect → first echoed byte to the
    // remote server. Slower than the above: a young process still grows its
    // heap (`mprotect` calls in strace) and, presumably, faults code in.
    let mut cold = Vec::new();
    for _ in 0..5 {
        cluster.stop("ztunnel-node-a")?;
        cluster.start("ztunnel-node-a")?;
        let node = cluster.node("node-a").context("node-a")?.netns.clone();
        for _ in 0..200 {
            if localmesh::net::http_get(&node, "127.0.0.1:15021".parse()?, "/healthz/ready")
                .is_ok_and(|(s, _)| s == 200)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Warm the restarted process's code paths on another destination
        // (its own HBONE connection), so the sample is one new connection,
        // not a cold process. That destination is on node-a, so the sample
        // (on node-b) has no TLS session to resume: a full handshake.
        let _ = e2e::probe::first_byte(&mesh_client.netns, paths[1].echo);
        if let Ok(d) = e2e::probe::first_byte(&mesh_client.netns, paths[2].echo) {
            cold.push(d);
        }
    }
    let cold = Percentiles::of(cold);

    // Report.
    let direct = &results[DIRECT].1;
    if args.repeat > 1 {
        println!("\nmedians of {} interleaved rounds", args.repeat);
    }
    println!(
        "\n{:<24} {:>12} {:>12} {:>22} {:>22}",
        "path", "1 stream", "64 streams", "RR p50/p90/p99 µs", "RR new conn p50/p99 µs"
    );
    for (name, f) in &results {
        println!(
            "{:<24} {:>9.0} MiB/s {:>6.0} MiB/s {:>8.0}/{:.0}/{:.0} {:>14.0}/{:.0}",
            name,
            f.throughput / 1048576.0,
            f.parallel / 1048576.0,
            f.rr.p50,
            f.rr.p90,
            f.rr.p99,
            f.rr_new.p50,
            f.rr_new.p99
        );
    }
    println!("\nagainst direct (same run)");
    for (name, f) in results.iter().skip(1) {
        println!(
            "{:<24} throughput {:.2}×   64 streams {:.2}×   RR p50 {:+.0} µs   RR p99 {:.0} µs",
            name,
            f.throughput / direct.throughput,
            f.parallel / direct.parallel,
            f.rr.p50 - direct.rr.p50,
            f.rr.p99
        );
    }
    let (across, floor_path) = (&results[ACROSS].1, &results[FLOOR].1);
    println!(
        "\nmesh across nodes against the relay floor (the same hops, no TLS, no HTTP/2): \
         throughput {:.2}× the floor's, RR p50 {:+.0} µs and p99 {:+.0} µs over the floor's; \
         the floor against direct: {:.2}×, RR p50 {:+.0} µs",
        across.throughput / floor_path.throughput.max(1.0),
        across.rr.p50 - floor_path.rr.p50,
        across.rr.p99 - floor_path.rr.p99,
        floor_path.throughput / direct.throughput.max(1.0),
        floor_path.rr.p50 - direct.rr.p50,
    );
    println!(
        "\nnew HBONE connection to first byte: p50 {:.0} µs, p99 {:.0} µs ({} of {FRESH_PODS} \
         resumed a TLS session; new direct TCP connection: p50 {:.0} µs, p99 {:.0} µs; {:.1}× the time)",
        fresh.p50,
        fresh.p99,
        resumed.map_or("?".to_string(), |n| n.to_string()),
        new_tcp.p50,
        new_tcp.p99,
        fresh.p50 / new_tcp.p50.max(1.0)
    );
    println!(
        "first HBONE connection after a ztunnel restart (full TLS handshake): p50 {:.0} µs, \
         p99 {:.0} µs",
        cold.p50, cold.p99
    );
    let cpu_of = |label: &str| {
        cpu_per_gib.iter().find(|(l, _)| l == label).map_or(CpuPerGib::default(), |(_, v)| *v)
    };
    for (i, (label, _)) in ztunnels.iter().enumerate() {
        let cpu = cpu_of(label);
        println!(
            "{label}: RSS idle {:.1} MiB ({:.1} anonymous, the rest the binary and shared \
             libraries), peak {:.1} MiB, now {:.1} MiB; {:.2} CPU-s per GiB across nodes \
             ({:.2} user, {:.2} kernel)",
            idle[i].rss_kib as f64 / 1024.0,
            idle[i].anon_kib as f64 / 1024.0,
            peak[i].peak_kib as f64 / 1024.0,
            peak[i].rss_kib as f64 / 1024.0,
            cpu.total(),
            cpu.user,
            cpu.kernel,
        );
    }
    for (label, cpu) in &relay_cpu_per_gib {
        println!(
            "{label} (floor): {:.2} CPU-s per GiB ({:.2} user, {:.2} kernel)",
            cpu.total(),
            cpu.user,
            cpu.kernel
        );
    }
    if peaks_by_path {
        let labels: Vec<&str> = ztunnels.iter().map(|(l, _)| l.as_str()).collect();
        println!("peak RSS by path ({}):", labels.join(" / "));
        for (path, by_ztunnel) in paths.iter().zip(&path_peaks) {
            let mib: Vec<String> =
                by_ztunnel.iter().map(|k| format!("{:.1} MiB", *k as f64 / 1024.0)).collect();
            println!("  {:<24} {}", path.name, mib.join(" / "));
        }
    }
    if let (Some(z), Some((_, theirs_f))) = (&args.compare_ztunnel, results.get(COMPARE)) {
        let pick = |compared: bool, f: &dyn Fn(usize) -> f64| {
            (0..ztunnels.len())
                .filter(|i| is_compared(&ztunnels[*i].0) == compared)
                .map(f)
                .fold(0.0, f64::max)
        };
        let cpu = |compared: bool| {
            pick(compared, &|i| {
                cpu_per_gib
                    .iter()
                    .find(|(l, _)| *l == ztunnels[i].0)
                    .map_or(0.0, |(_, c)| c.total())
            })
        };
        const MIB: f64 = 1048576.0;
        let idle_mib = |c: bool| pick(c, &|i| idle[i].rss_kib as f64 / 1024.0);
        let peak_mib = |c: bool| pick(c, &|i| peak[i].peak_kib as f64 / 1024.0);
        println!(
            "\nours against {} ({:?}), across nodes, same run: ours / theirs \
             (above 1 is better for throughput, below 1 for the rest)",
            z.program.display(),
            z.flavour
        );
        let rows = [
            ("1 stream MiB/s", across.throughput / MIB, theirs_f.throughput / MIB),
            ("64 streams MiB/s", across.parallel / MIB, theirs_f.parallel / MIB),
            ("RR p50 µs", across.rr.p50, theirs_f.rr.p50),
            ("RR p99 µs", across.rr.p99, theirs_f.rr.p99),
            ("RR new connection p50 µs", across.rr_new.p50, theirs_f.rr_new.p50),
            ("CPU-s per GiB (worst side)", cpu(false), cpu(true)),
            ("RSS idle MiB (larger)", idle_mib(false), idle_mib(true)),
            ("RSS peak MiB (larger)", peak_mib(false), peak_mib(true)),
        ];
        for (what, ours_v, theirs_v) in rows {
            println!(
                "  {what:<28} {ours_v:>12.2} {theirs_v:>12.2}   {:.2}×",
                ours_v / theirs_v.max(1e-9)
            );
        }
    }
    println!("pinned: {}", args.pin);

    // Targets judge ours only.
    let worst = |f: &dyn Fn(usize) -> f64| {
        (0..ztunnels.len()).filter(|i| !is_compared(&ztunnels[*i].0)).map(f).fold(0.0, f64::max)
    };
    let floor_measured = targets::Measured {
        throughput_ratio: floor_path.throughput / direct.throughput.max(1.0),
        rr_p50_over_direct_us: floor_path.rr.p50 - direct.rr.p50,
        rr_p99_us: floor_path.rr.p99,
        rr_new_connection_p50_us: floor_path.rr_new.p50,
        // Three new TCP connections, first bytes echoed: a new HBONE
        // connection's floor.
        new_hbone_connection_p50_us: floor_path.rr_new.p50,
        cpu_seconds_per_gib: relay_cpu_per_gib.iter().map(|(_, v)| v.total()).fold(0.0, f64::max),
        rss_idle_mib: 0.0,
        rss_peak_mib: 0.0,
    };
    let verdicts = targets::judge(
        &targets::Measured {
            throughput_ratio: across.throughput / direct.throughput.max(1.0),
            rr_p50_over_direct_us: across.rr.p50 - direct.rr.p50,
            rr_p99_us: across.rr.p99,
            rr_new_connection_p50_us: across.rr_new.p50,
            new_hbone_connection_p50_us: fresh.p50,
            cpu_seconds_per_gib: cpu_per_gib
                .iter()
                .filter(|(l, _)| !is_compared(l))
                .map(|(_, v)| v.total())
                .fold(0.0, f64::max),
            rss_idle_mib: worst(&|i| idle[i].rss_kib as f64 / 1024.0),
            rss_peak_mib: worst(&|i| peak[i].peak_kib as f64 / 1024.0),
        },
        Some(&floor_measured),
    );
    println!(
        "\n{:<38} {:>8} {:>10}  met {:>12}",
        "target (issue #8)", "bound", "this run", "relay floor"
    );
    for v in &verdicts {
        let met = if v.met { "yes" } else { "no " };
        let floor = v.floor.map_or("-".to_string(), |f| format!("{f:.2}"));
        println!("{:<38} {:>8} {:>10.2}  {met} {floor:>12}", v.metric, v.target, v.value);
    }
    if let Some(path) = &args.json {
        let out = json!({
            "pinned": args.pin,
            "seconds": args.seconds,
            "repeat": args.repeat,
            "paths": results.iter().map(|(name, f)| json!({
                "path": name,
                "throughput_bytes_per_second": f.throughput,
                "parallel64_bytes_per_second": f.parallel,
                "rr_us": {"p50": f.rr.p50, "p90": f.rr.p90, "p99": f.rr.p99},
                "rr_new_connection_us": {"p50": f.rr_new.p50, "p90": f.rr_new.p90, "p99": f.rr_new.p99},
            })).collect::<Vec<_>>(),
            "new_hbone_connection_us": {
                "p50": fresh.p50, "p90": fresh.p90, "p99": fresh.p99, "tls_sessions_resumed": resumed,
            },
            "new_direct_connection_us": {"p50": new_tcp.p50, "p90": new_tcp.p90, "p99": new_tcp.p99},
            "first_hbone_connection_after_restart_us": {"p50": cold.p50, "p99": cold.p99},
            "targets": verdicts.iter().map(|v| json!({
                "metric": v.metric, "target": v.target, "value": v.value, "met": v.met,
                "relay_floor": v.floor,
            })).collect::<Vec<_>>(),
            "relays": relay_cpu_per_gib.iter().map(|(label, cpu)| json!({
                "name": label,
                "cpu_seconds_per_gib": cpu.total(),
                "cpu_user_seconds_per_gib": cpu.user,
                "cpu_kernel_seconds_per_gib": cpu.kernel,
            })).collect::<Vec<_>>(),
            "ztunnels": ztunnels.iter().enumerate().map(|(i, (label, _))| json!({
                "name": label,
                "rss_idle_kib": idle[i].rss_kib,
                "rss_idle_anonymous_kib": idle[i].anon_kib,
                "rss_peak_kib": peak[i].peak_kib,
                "rss_peak_kib_by_path": peaks_by_path.then(|| paths.iter().zip(&path_peaks)
                    .map(|(p, by_ztunnel)| (p.name.to_string(), json!(by_ztunnel[i])))
                    .collect::<serde_json::Map<_, _>>()),
                "rss_after_kib": peak[i].rss_kib,
                "cpu_seconds_per_gib": cpu_of(label).total(),
                "cpu_user_seconds_per_gib": cpu_of(label).user,
                "cpu_kernel_seconds_per_gib": cpu_of(label).kernel,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    drop(relay_floor);
    drop(cluster);
    let _ = std::fs::remove_dir_all(state_dir);
    Ok(())
}
