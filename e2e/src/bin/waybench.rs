//! `waybench`: HTTP through the waypoint against the same requests through
//! nginx and haproxy as reverse proxies on the same hops, and against the
//! direct path, in one run (root; a local cluster of network namespaces).
//!
//! `cargo run --release -p e2e --bin waybench -- [--seconds 5] [--concurrency 32] [--repeat 3]`
//! (figures and how to read them: `docs/performance.md`)
//!
//! Hops: a client pod on one node, the proxy's pod on a node, the backend
//! (`mesh-sample http-echo`) on the other node.
//! - waypoint: client ztunnel → waypoint → destination ztunnel, all
//!   HBONE (mTLS), the way the mesh carries it;
//! - nginx (one worker) and haproxy (one thread): plain HTTP, run inside
//!   the waypoint's own pod (same node, same address), proxying to a backend
//!   outside the mesh;
//! - direct: the client to that backend, no proxy.
//!
//! The reference proxies do no TLS here, the waypoint terminates and
//! originates mTLS; each proxy's CPU is its own process's, so requests per
//! proxy CPU-second compare the work of each. Figures are medians of
//! `--repeat` rounds, the paths interleaved. nginx and haproxy are found on
//! `PATH` or `/usr/sbin`, or installed with apt (Debian's `nginx-light`,
//! `haproxy`); a proxy that cannot be found is left out and said so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use e2e::stats::{Percentiles, median, process_stats, reset_peak};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use localmesh::{Cluster, ClusterSpec, Options};

/// Waypoint vs nginx vs haproxy, one run.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value = "5")]
    seconds: f64,
    /// Requests in flight (HTTP/1.1: connections; HTTP/2: streams on one
    /// connection).
    #[arg(long, default_value = "32")]
    concurrency: usize,
    /// Rounds; each figure is the median.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Streams for the memory-under-load figure.
    #[arg(long, default_value = "1000")]
    many_streams: usize,
    /// The waypoint's worker threads (nginx runs one worker, haproxy one
    /// thread).
    #[arg(long, default_value = "1")]
    waypoint_threads: usize,
    /// Keep the waypoint's per-request access log on (nginx and haproxy
    /// run without one; off by default so the figures compare like work).
    #[arg(long)]
    access_log: bool,
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mesh}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {nodeName: node-a, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: mesh, labels: {app: backend}}
spec: {nodeName: node-b, containers: [{name: c, image: none, command: [mesh-sample, http-echo, --port, "8080"]}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: mesh}
spec: {clusterIP: 10.96.0.50, selector: {app: backend}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: plain}
spec: {nodeName: node-a, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: plain}
spec: {nodeName: node-b, containers: [{name: c, image: none, command: [mesh-sample, http-echo, --port, "8080"]}]}
"#;

/// One proxy under test.
struct Subject {
    name: &'static str,
    client_netns: String,
    /// HTTP/1.1 and HTTP/2 addresses.
    http1: SocketAddr,
    http2: SocketAddr,
    /// The proxy's processes (none for direct).
    pids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rps: f64,
    latency: Percentiles,
    errors: u64,
    cpu_seconds: f64,
}

/// The first failed request, for the message when a path is left out.
static FIRST_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The reference proxies, stopped however `main` ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.exists())
}

fn find_or_install(program: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = find(program) {
        return Some(p);
    }
    eprintln!("waybench: {program} not found; installing {package} with apt-get");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("waybench: could not install {package}; {program} is left out");
    }
    find(program)
}

/// Starts `program args` inside `netns`, output to `log`.
fn start_in(netns: &str, program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Ok(Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

fn nginx_config(dir: &Path, backend: SocketAddr) -> anyhow::Result<PathBuf> {
    let path = dir.join("nginx.conf");
    std::fs::write(
        &path,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             upstream backend {{ server {backend}; keepalive 256; }}\n\
             server {{\n    listen 18080;\n    listen 18082 http2;\n    location / {{\n      proxy_pass http://backend;\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            dir = dir.display()
        ),
    )?;
    Ok(path)
}

fn haproxy_config(dir: &Path, backend: SocketAddr) -> anyhow::Result<PathBuf> {
    let path = dir.join("haproxy.cfg");
    std::fs::write(
        &path,
        format!(
            "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n\
             frontend h1\n  bind :18081\n  default_backend b\nfrontend h2\n  bind :18083 proto h2\n  default_backend b\n\
             backend b\n  server s1 {backend}\n"
        ),
    )?;
    Ok(path)
}

/// `concurrency` requests in flight for `seconds` against `addr`, from
/// inside `netns`.
fn load(
    netns: &str,
    addr: SocketAddr,
    http2: bool,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Percentiles, u64)> {
    localmesh::net::in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(run_load(addr, http2, concurrency, seconds))
    })?
}

async fn run_load(
    addr: SocketAddr,
    http2: bool,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Percentiles, u64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let uri: http::Uri = format!("http://{addr}/bench").parse()?;
    let mut tasks = Vec::new();
    let h2 = if http2 {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_reset_streams(0)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        Some(sender)
    } else {
        None
    };
    for _ in 0..concurrency {
        let uri = uri.clone();
        let h2 = h2.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            let mut h1 = None;
            while Instant::now() < deadline {
                let start = Instant::now();
                let ok = if let Some(mut sender) = h2.clone() {
                    let request = http::Request::builder()
                        .uri(uri.clone())
                        .body(Empty::<Bytes>::new())
                        .unwrap_or_default();
                    match sender.send_request(request).await {
                        Ok(r) => r.into_body().collect().await.is_ok(),
                        Err(e) => {
                            FIRST_ERROR.get_or_init(|| format!("h2 {addr}: {e:?}"));
                            false
                        }
                    }
                } else {
                    if h1.is_none() {
                        let stream = tokio::net::TcpStream::connect(addr).await;
                        if let Ok(stream) = stream {
                            let _ = stream.set_nodelay(true);
                            if let Ok((sender, conn)) =
                                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                            {
                                tokio::spawn(conn);
                                h1 = Some(sender);
                            }
                        }
                    }
                    match h1.as_mut() {
                        Some(sender) => {
                            let request = http::Request::builder()
                                .uri("/bench")
                                .header("host", "backend.mesh.svc.cluster.local")
                                .body(Empty::<Bytes>::new())
                                .unwrap_or_default();
                            let sent = match sender.ready().await {
                                Ok(()) => sender.send_request(request).await,
                                Err(e) => Err(e),
                            };
                            match sent {
                                Ok(r) if !r.status().is_success() => {
                                    FIRST_ERROR.get_or_init(|| {
                                        format!("h1 {addr}: status {}", r.status())
                                    });
                                    false
                                }
                                Ok(r) => r.into_body().collect().await.is_ok(),
                                Err(e) => {
                                    FIRST_ERROR.get_or_init(|| format!("h1 {addr}: {e:?}"));
                                    h1 = None;
                                    false
                                }
                            }
                        }
                        None => false,
                    }
                };
                if ok {
                    samples.push(start.elapsed());
                } else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (samples, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (samples, e) = t.await?;
        all.extend(samples);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    let rps = all.len() as f64 / elapsed;
    Ok((rps, Percentiles::of(all), errors))
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| process_stats(*p)).map(|s| s.user_seconds + s.kernel_seconds).sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nginx = find_or_install("nginx", "nginx-light");
    let haproxy = find_or_install("haproxy", "haproxy");
    let bin_dir = std::env::current_exe()?.parent().map(Path::to_path_buf).context("no bin dir")?;
    let state = std::env::temp_dir().join("mesh-waybench");
    std::fs::create_dir_all(&state)?;
    let docs = localmesh::spec::parse(CLUSTER, "waybench")?;
    let spec = ClusterSpec::from_documents(docs)?;
    let options = Options {
        name: "waybench".into(),
        state_dir: state.clone(),
        bin_dir,
        ztunnels: Default::default(),
        agent_env: Vec::new(),
        // One worker by default (the waypoint's own default), like the
        // one nginx worker and haproxy thread.
        waypoint_env: vec![("WORKER_THREADS".into(), args.waypoint_threads.to_string())],
    };
    let cluster = Cluster::up(&spec, options).context("bringing the cluster up")?;
    let pod =
        |ns: &str, name: &str| cluster.pod(ns, name).cloned().context(format!("pod {ns}/{name}"));
    let (mesh_client, plain_client, plain_backend, waypoint) = (
        pod("mesh", "client")?,
        pod("plain", "client")?,
        pod("plain", "backend")?,
        pod("mesh", "waypoint-0")?,
    );
    let waypoint_pid = cluster
        .state()
        .components
        .iter()
        .find(|c| c.label == localmesh::cluster::waypoint_label("mesh", "waypoint"))
        .map(|c| c.pid)
        .context("the waypoint's process")?;
    let ztunnel_pids: Vec<u32> = cluster
        .state()
        .components
        .iter()
        .filter(|c| c.label.starts_with("ztunnel-"))
        .map(|c| c.pid)
        .collect();
    let backend = SocketAddr::new(plain_backend.ip, 8080);
    let at = |port: u16| SocketAddr::new(waypoint.ip, port);
    let mut children = Children(Vec::new());
    let mut paths = vec![
        Subject {
            name: "direct",
            client_netns: plain_client.netns.clone(),
            http1: backend,
            http2: backend,
            pids: vec![],
        },
        Subject {
            name: "waypoint",
            client_netns: mesh_client.netns.clone(),
            http1: "10.96.0.50:80".parse()?,
            http2: "10.96.0.50:80".parse()?,
            pids: vec![waypoint_pid],
        },
    ];
    if let Some(nginx) = &nginx {
        let config = nginx_config(&state, backend)?;
        let child = start_in(
            &waypoint.netns,
            nginx,
            &["-c", &config.display().to_string(), "-e", "stderr"],
            &state.join("nginx.log"),
        )?;
        paths.push(Subject {
            name: "nginx",
            client_netns: plain_client.netns.clone(),
            http1: at(18080),
            http2: at(18082),
            // `ip netns exec` execs the program: the same pid.
            pids: vec![child.id()],
        });
        children.0.push(child);
    }
    if let Some(haproxy) = &haproxy {
        let config = haproxy_config(&state, backend)?;
        let child = start_in(
            &waypoint.netns,
            haproxy,
            &["-db", "-f", &config.display().to_string()],
            &state.join("haproxy.log"),
        )?;
        paths.push(Subject {
            name: "haproxy",
            client_netns: plain_client.netns.clone(),
            http1: at(18081),
            http2: at(18083),
            // `ip netns exec` execs the program: the same pid.
            pids: vec![child.id()],
        });
        children.0.push(child);
    }
    std::thread::sleep(Duration::from_secs(1));
    // Everything answers before anything is measured; what never does is
    // left out, and said so.
    let mut usable = Vec::new();
    for path in paths {
        let began = Instant::now();
        let deadline = began + Duration::from_secs(60);
        let ready = loop {
            let h1 = load(&path.client_netns, path.http1, false, 1, 0.2);
            let h2 = load(&path.client_netns, path.http2, true, 1, 0.2);
            if matches!((&h1, &h2), (Ok((r1, _, 0)), Ok((r2, _, 0))) if *r1 > 0.0 && *r2 > 0.0) {
                eprintln!(
                    "waybench: {} answers after {:.1} s",
                    path.name,
                    began.elapsed().as_secs_f64()
                );
                break true;
            }
            if Instant::now() > deadline {
                let logs: String = ["nginx.log", "nginx-error.log", "haproxy.log"]
                    .iter()
                    .filter(|f| f.starts_with(path.name))
                    .filter_map(|f| std::fs::read_to_string(state.join(f)).ok())
                    .collect();
                eprintln!(
                    "waybench: {} does not answer (h1: {:?}, h2: {:?}; first failure: {:?}); left out. Its log:\n{logs}",
                    path.name,
                    h1.map(|r| r.2),
                    h2.map(|r| r.2),
                    FIRST_ERROR.get()
                );
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if ready {
            usable.push(path);
        }
    }
    let paths = usable;
    if !args.access_log {
        let admin = SocketAddr::from(([127, 0, 0, 1], 15000));
        let (status, body) =
            localmesh::net::http_post(&waypoint.netns, admin, "/logging?level=info,access=off")?;
        anyhow::ensure!(status == 200, "turning the waypoint's access log off: {status} {body}");
    }
    let waypoint_idle_kib = process_stats(waypoint_pid).rss_kib;

    let mut rounds: Vec<Vec<[Figures; 2]>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..args.repeat {
        for (i, path) in paths.iter().enumerate() {
            let mut pair = [Figures::default(); 2];
            for (j, http2) in [false, true].into_iter().enumerate() {
                let addr = if http2 { path.http2 } else { path.http1 };
                let before = cpu_of(&path.pids);
                let (rps, latency, errors) =
                    load(&path.client_netns, addr, http2, args.concurrency, args.seconds)?;
                pair[j] =
                    Figures { rps, latency, errors, cpu_seconds: cpu_of(&path.pids) - before };
            }
            rounds[i].push(pair);
            eprintln!("round {} {}: done", round + 1, path.name);
        }
    }
    let ztunnel_cpu_note = cpu_of(&ztunnel_pids);

    println!(
        "\n{} in flight, {} s per figure, median of {} round(s). CPU is the proxy's own process. Waypoint: {} worker thread(s), access log {}.\n",
        args.concurrency,
        args.seconds,
        args.repeat,
        args.waypoint_threads,
        if args.access_log { "on" } else { "off (as nginx's and haproxy's)" }
    );
    println!(
        "{:<9} {:<6} {:>9} {:>9} {:>9} {:>8} {:>12} {:>7}",
        "path", "proto", "req/s", "p50 µs", "p99 µs", "CPU-s", "req/CPU-s", "errors"
    );
    for (path, rounds) in paths.iter().zip(&rounds) {
        for (j, proto) in ["h1", "h2"].iter().enumerate() {
            let pick =
                |f: &dyn Fn(&Figures) -> f64| median(rounds.iter().map(|r| f(&r[j])).collect());
            let (rps, p50, p99, cpu) = (
                pick(&|f| f.rps),
                pick(&|f| f.latency.p50),
                pick(&|f| f.latency.p99),
                pick(&|f| f.cpu_seconds),
            );
            let errors: u64 = rounds.iter().map(|r| r[j].errors).sum();
            let per_cpu =
                if cpu > 0.0 { format!("{:.0}", rps * args.seconds / cpu) } else { "-".into() };
            println!(
                "{:<9} {:<6} {:>9.0} {:>9.0} {:>9.0} {:>8.2} {:>12} {:>7}",
                path.name, proto, rps, p50, p99, cpu, per_cpu, errors
            );
        }
    }

    // Memory: idle, and the peak under many streams at once.
    let mut memory = Vec::new();
    for path in paths.iter().filter(|p| !p.pids.is_empty()) {
        let pid = path.pids[0];
        let idle =
            if path.name == "waypoint" { waypoint_idle_kib } else { process_stats(pid).rss_kib };
        let peak_known = reset_peak(pid);
        let (_, _, errors) =
            load(&path.client_netns, path.http2, true, args.many_streams, args.seconds.min(3.0))?;
        let peak = process_stats(pid).peak_kib;
        memory.push((path.name, idle, peak_known.then_some(peak), errors));
    }
    println!("\nmemory: RSS idle, and peak under {} HTTP/2 streams in flight", args.many_streams);
    for (name, idle, peak, errors) in memory {
        let peak = peak.map_or("-".into(), |p| format!("{:.1} MiB", p as f64 / 1024.0));
        println!(
            "{name:<9} idle {:.1} MiB   peak {peak}   ({errors} errors)",
            idle as f64 / 1024.0
        );
    }
    println!(
        "\n(the mesh path's two ztunnels used {ztunnel_cpu_note:.2} CPU-s in all, not counted above)"
    );
    drop(children);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
