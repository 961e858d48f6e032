//! `waybench`: HTTP through the waypoint against the same requests through
//! nginx and haproxy as reverse proxies on the same hops, and against the
//! direct path, in one run (root; a local cluster of network namespaces).
//!
//! `cargo run --release -p e2e --bin waybench -- [--seconds 5] [--concurrency 32] [--repeat 3]`
//! (figures and how to read them: `docs/performance.md`)
//!
//! Hops: a client pod on node-a, the proxy's pod on node-c, the backend
//! (`mesh-sample http-echo`) on node-b.
//! - waypoint: client ztunnel → waypoint → backend's ztunnel, all HBONE
//!   (mTLS), the way the mesh carries it;
//! - nginx (one worker) and haproxy (one thread) on the same hops: run in
//!   an ambient pod beside the waypoint, reached by the client's pod over
//!   the mesh and proxying to the backend's pod over it. They speak plain
//!   HTTP; node-c's ztunnel carries their mTLS both ways;
//! - nginx-plain and haproxy-plain: the same proxies off the mesh (in the
//!   waypoint's pod, plain TCP from a client and to a backend outside the
//!   mesh), for the proxies' own cost with no TLS anywhere;
//! - direct: the plain client to the plain backend, no proxy;
//! - waypoint-policies: the waypoint path to another service behind the
//!   same waypoint, which carries ten ALLOW AuthorizationPolicies of ten
//!   rules each and a RequestAuthentication; each request sends a JWT (one
//!   token per run, as a client reuses its token), and only the last rule
//!   of the last policy (its request principal) lets it through. Its
//!   requests/s against the waypoint path's is the cost of L7 security.
//!
//! Two CPU figures per path: the proxy's own process, and the hop's (the
//! proxy plus node-c's ztunnel): what serving on the mesh's hops costs, the
//! waypoint's own TLS and HTTP/2 included, nginx's and haproxy's TLS done
//! for them by the ztunnel. Figures are medians of `--repeat` rounds, the
//! paths interleaved. nginx and haproxy are found on `PATH` or `/usr/sbin`,
//! or installed with apt (Debian's `nginx-light`, `haproxy`); a proxy that
//! cannot be found is left out and said so. `--only NAME` measures some
//! paths alone (for a profiler: the waypoint's pid is printed).

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
    /// Measure only these paths (direct, waypoint, waypoint-policies,
    /// nginx, haproxy...; repeatable), for profiling one of them.
    #[arg(long)]
    only: Vec<String>,
    /// More environment for the waypoint (`NAME=VALUE`, repeatable), for
    /// trying a setting (an allocator's, say) without a rebuild.
    #[arg(long, value_parser = parse_env)]
    waypoint_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))
}

/// node-c comes first: the waypoint's pod, the one pod without a
/// `nodeName`, goes to the first node, beside the reference proxies.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-c}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
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
kind: Namespace
metadata: {name: ambient, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: proxies, namespace: ambient}
spec: {nodeName: node-c, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: ambient}
spec: {nodeName: node-b, containers: [{name: c, image: none, command: [mesh-sample, http-echo, --port, "8080"]}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: mesh}
spec: {clusterIP: 10.96.0.50, selector: {app: backend}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: guarded, namespace: mesh}
spec: {clusterIP: 10.96.0.51, selector: {app: backend}, ports: [{name: http, port: 80, targetPort: 8080}]}
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
    /// What serving on the mesh's hops costs: the proxy and the ztunnel
    /// of its node (none off the mesh).
    hop_pids: Vec<u32>,
    /// A JWT each request carries.
    token: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rps: f64,
    latency: Percentiles,
    errors: u64,
    cpu_seconds: f64,
    hop_cpu_seconds: f64,
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
    token: Option<&str>,
) -> anyhow::Result<(f64, Percentiles, u64)> {
    let authorization = token.map(|t| format!("Bearer {t}"));
    localmesh::net::in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(run_load(addr, http2, concurrency, seconds, authorization))
    })?
}

async fn run_load(
    addr: SocketAddr,
    http2: bool,
    concurrency: usize,
    seconds: f64,
    authorization: Option<String>,
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
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            let mut h1 = None;
            while Instant::now() < deadline {
                let start = Instant::now();
                let ok = if let Some(mut sender) = h2.clone() {
                    let mut request = http::Request::builder().uri(uri.clone());
                    if let Some(a) = &authorization {
                        request = request.header(http::header::AUTHORIZATION, a.as_str());
                    }
                    let request = request.body(Empty::<Bytes>::new()).unwrap_or_default();
                    match sender.send_request(request).await {
                        Ok(r) if !r.status().is_success() => {
                            FIRST_ERROR.get_or_init(|| format!("h2 {addr}: status {}", r.status()));
                            false
                        }
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
                            let mut request = http::Request::builder()
                                .uri("/bench")
                                .header("host", "backend.mesh.svc.cluster.local");
                            if let Some(a) = &authorization {
                                request = request.header(http::header::AUTHORIZATION, a.as_str());
                            }
                            let request = request.body(Empty::<Bytes>::new()).unwrap_or_default();
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

/// The policies of the `waypoint-policies` path, and a token they accept.
/// Each rule names what a real policy would (principals, methods, paths,
/// a header); none but the last matches the benchmark's requests.
fn guarded_policies() -> anyhow::Result<(String, String)> {
    use base64::Engine as _;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = pair.public_key_raw().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
    let issuer = "https://issuer.bench";
    let mut yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: mesh}}\nspec:\n  targetRefs: [{{kind: Service, group: \"\", name: guarded}}]\n  jwtRules: [{{issuer: \"{issuer}\", audiences: [guarded], jwks: '{jwks}'}}]\n"
    );
    for p in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{p}, namespace: mesh}}\nspec:\n  targetRefs: [{{kind: Service, group: \"\", name: guarded}}]\n  rules:\n"
        ));
        for r in 0..10 {
            if p == 9 && r == 9 {
                yaml.push_str(&format!(
                    "  - from: [{{source: {{requestPrincipals: [\"{issuer}/client\"]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [\"/bench\"]}}}}]\n"
                ));
            } else {
                yaml.push_str(&format!(
                    "  - from: [{{source: {{principals: [\"cluster.local/ns/team-{p}/sa/app-{r}\"]}}}}]\n    to: [{{operation: {{methods: [GET, POST], paths: [\"/api/{p}/{r}/*\"]}}}}]\n    when: [{{key: \"request.headers[x-team]\", values: [\"team-{p}\"]}}]\n"
                ));
            }
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims =
        serde_json::json!({"iss": issuer, "sub": "client", "aud": "guarded", "exp": now + 86_400});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
    )?;
    Ok((yaml, token))
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
        waypoint_env: [("WORKER_THREADS".to_string(), args.waypoint_threads.to_string())]
            .into_iter()
            .chain(args.waypoint_env.iter().cloned())
            .collect(),
    };
    let cluster = Cluster::up(&spec, options).context("bringing the cluster up")?;
    let pod =
        |ns: &str, name: &str| cluster.pod(ns, name).cloned().context(format!("pod {ns}/{name}"));
    let (mesh_client, mesh_backend, proxies, plain_client, plain_backend, waypoint) = (
        pod("mesh", "client")?,
        // The same backend in a namespace with no waypoint: pods behind a
        // waypoint take traffic only from it.
        pod("ambient", "backend")?,
        pod("ambient", "proxies")?,
        pod("plain", "client")?,
        pod("plain", "backend")?,
        pod("mesh", "waypoint-0")?,
    );
    let component = |label: &str| {
        cluster
            .state()
            .components
            .iter()
            .find(|c| c.label == label)
            .map(|c| c.pid)
            .context(format!("no process {label}"))
    };
    let waypoint_pid = component(&localmesh::cluster::waypoint_label("mesh", "waypoint"))?;
    anyhow::ensure!(
        waypoint.node == proxies.node,
        "the waypoint landed on {}, not beside the reference proxies on {}",
        waypoint.node,
        proxies.node
    );
    // The ztunnel of the proxies' node: the mTLS nginx and haproxy lean on
    // there, and (a check) nothing for the waypoint, which does its own.
    let hop_ztunnel = component(&format!("ztunnel-{}", proxies.node))?;
    let end_ztunnels = vec![
        component(&format!("ztunnel-{}", mesh_client.node))?,
        component(&format!("ztunnel-{}", mesh_backend.node))?,
    ];
    eprintln!("waybench: the waypoint is process {waypoint_pid}");
    // Ten ALLOW policies of ten rules and a RequestAuthentication on
    // `guarded`; in force before anything is measured (no token: 403).
    let (policies, token) = guarded_policies()?;
    cluster.apply("policies.yaml", &localmesh::spec::parse(&policies, "policies")?)?;
    let guarded = SocketAddr::from(([10, 96, 0, 51], 80));
    let began = Instant::now();
    loop {
        let status = localmesh::net::http_get(&mesh_client.netns, guarded, "/bench").map(|r| r.0);
        if matches!(status, Ok(403)) {
            break;
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(60),
            "the policies on guarded never came into force (last answer: {status:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let plain_target = SocketAddr::new(plain_backend.ip, 8080);
    let mesh_target = SocketAddr::new(mesh_backend.ip, 8080);
    let mut children = Children(Vec::new());
    let mut paths = vec![
        Subject {
            name: "direct",
            client_netns: plain_client.netns.clone(),
            http1: plain_target,
            http2: plain_target,
            pids: vec![],
            hop_pids: vec![],
            token: None,
        },
        Subject {
            name: "waypoint",
            client_netns: mesh_client.netns.clone(),
            http1: "10.96.0.50:80".parse()?,
            http2: "10.96.0.50:80".parse()?,
            pids: vec![waypoint_pid],
            hop_pids: vec![waypoint_pid, hop_ztunnel],
            token: None,
        },
        Subject {
            name: "waypoint-policies",
            client_netns: mesh_client.netns.clone(),
            http1: "10.96.0.51:80".parse()?,
            http2: "10.96.0.51:80".parse()?,
            pids: vec![waypoint_pid],
            hop_pids: vec![waypoint_pid, hop_ztunnel],
            token: Some(token.clone()),
        },
    ];
    // Each reference proxy twice: on the mesh's hops (an ambient pod beside
    // the waypoint, its node's ztunnel carrying the mTLS both ways), and off
    // the mesh (plain TCP from a client outside it, the waypoint's pod).
    let placements = [
        ("mesh", &proxies, &mesh_client, mesh_target, Some(hop_ztunnel)),
        ("plain", &waypoint, &plain_client, plain_target, None),
    ];
    for (placement, pod, client, target, ztunnel) in placements {
        let dir = state.join(placement);
        std::fs::create_dir_all(&dir)?;
        let at = |port: u16| SocketAddr::new(pod.ip, port);
        let mut reference = |name: &'static str, child: Child, ports: (u16, u16)| {
            // `ip netns exec` execs the program: the same pid.
            let pid = child.id();
            children.0.push(child);
            paths.push(Subject {
                name,
                client_netns: client.netns.clone(),
                http1: at(ports.0),
                http2: at(ports.1),
                pids: vec![pid],
                hop_pids: ztunnel.map_or_else(Vec::new, |z| vec![pid, z]),
                token: None,
            });
        };
        if let Some(nginx) = &nginx {
            let config = nginx_config(&dir, target)?;
            let args = ["-c", &config.display().to_string(), "-e", "stderr"];
            let child = start_in(&pod.netns, nginx, &args, &dir.join("nginx.log"))?;
            let name = if placement == "mesh" { "nginx" } else { "nginx-plain" };
            reference(name, child, (18080, 18082));
        }
        if let Some(haproxy) = &haproxy {
            let config = haproxy_config(&dir, target)?;
            let args = ["-db", "-f", &config.display().to_string()];
            let child = start_in(&pod.netns, haproxy, &args, &dir.join("haproxy.log"))?;
            let name = if placement == "mesh" { "haproxy" } else { "haproxy-plain" };
            reference(name, child, (18081, 18083));
        }
    }
    if let Some(unknown) = args.only.iter().find(|o| !paths.iter().any(|p| p.name == o.as_str())) {
        let known: Vec<&str> = paths.iter().map(|p| p.name).collect();
        anyhow::bail!("--only {unknown}: no such path here (paths: {})", known.join(", "));
    }
    paths.retain(|p| args.only.is_empty() || args.only.iter().any(|o| o == p.name));
    std::thread::sleep(Duration::from_secs(1));
    // Everything answers before anything is measured; what never does is
    // left out, and said so.
    let mut usable = Vec::new();
    for path in paths {
        let began = Instant::now();
        let deadline = began + Duration::from_secs(60);
        let ready = loop {
            let token = path.token.as_deref();
            let h1 = load(&path.client_netns, path.http1, false, 1, 0.2, token);
            let h2 = load(&path.client_netns, path.http2, true, 1, 0.2, token);
            if matches!((&h1, &h2), (Ok((r1, _, 0)), Ok((r2, _, 0))) if *r1 > 0.0 && *r2 > 0.0) {
                eprintln!(
                    "waybench: {} answers after {:.1} s",
                    path.name,
                    began.elapsed().as_secs_f64()
                );
                break true;
            }
            if Instant::now() > deadline {
                let (program, placement) = match path.name.split_once('-') {
                    Some((program, _)) => (program, "plain"),
                    None => (path.name, "mesh"),
                };
                let logs: String = ["nginx.log", "nginx-error.log", "haproxy.log"]
                    .iter()
                    .filter(|f| f.starts_with(program))
                    .filter_map(|f| std::fs::read_to_string(state.join(placement).join(f)).ok())
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
                let (before, hop_before) = (cpu_of(&path.pids), cpu_of(&path.hop_pids));
                let (rps, latency, errors) = load(
                    &path.client_netns,
                    addr,
                    http2,
                    args.concurrency,
                    args.seconds,
                    path.token.as_deref(),
                )?;
                pair[j] = Figures {
                    rps,
                    latency,
                    errors,
                    cpu_seconds: cpu_of(&path.pids) - before,
                    hop_cpu_seconds: cpu_of(&path.hop_pids) - hop_before,
                };
            }
            rounds[i].push(pair);
            eprintln!("round {} {}: done", round + 1, path.name);
        }
    }
    let ztunnel_cpu_note = cpu_of(&end_ztunnels);

    println!(
        "\n{} in flight, {} s per figure, median of {} round(s). Waypoint: {} worker thread(s), access log {}.\n\
         proxy CPU: the proxy's own process. hop CPU: the proxy and the ztunnel of its node, what serving\n\
         on the mesh's hops costs (the waypoint does its own mTLS; nginx and haproxy lean on that ztunnel).\n\
         -plain: the same proxy off the mesh, plain TCP from a client outside it (no hop figure).\n",
        args.concurrency,
        args.seconds,
        args.repeat,
        args.waypoint_threads,
        if args.access_log { "on" } else { "off (as nginx's and haproxy's)" }
    );
    println!(
        "{:<17} {:<5} {:>7} {:>7} {:>7} {:>10} {:>10} {:>8} {:>10} {:>6}",
        "path",
        "proto",
        "req/s",
        "p50 µs",
        "p99 µs",
        "proxy CPU",
        "req/CPU-s",
        "hop CPU",
        "req/CPU-s",
        "errors"
    );
    for (path, rounds) in paths.iter().zip(&rounds) {
        for (j, proto) in ["h1", "h2"].iter().enumerate() {
            let pick =
                |f: &dyn Fn(&Figures) -> f64| median(rounds.iter().map(|r| f(&r[j])).collect());
            let (rps, p50, p99, cpu, hop_cpu) = (
                pick(&|f| f.rps),
                pick(&|f| f.latency.p50),
                pick(&|f| f.latency.p99),
                pick(&|f| f.cpu_seconds),
                pick(&|f| f.hop_cpu_seconds),
            );
            let errors: u64 = rounds.iter().map(|r| r[j].errors).sum();
            let seconds = |cpu: f64, known: bool| {
                if known { format!("{cpu:.2}") } else { "-".into() }
            };
            let per_cpu = |cpu: f64, known: bool| {
                if known && cpu > 0.0 {
                    format!("{:.0}", rps * args.seconds / cpu)
                } else {
                    "-".into()
                }
            };
            let (own, hop) = (!path.pids.is_empty(), !path.hop_pids.is_empty());
            println!(
                "{:<17} {:<5} {:>7.0} {:>7.0} {:>7.0} {:>10} {:>10} {:>8} {:>10} {:>6}",
                path.name,
                proto,
                rps,
                p50,
                p99,
                seconds(cpu, own),
                per_cpu(cpu, own),
                seconds(hop_cpu, hop),
                per_cpu(hop_cpu, hop),
                errors
            );
        }
    }

    let rps_of = |name: &str, j: usize| {
        paths
            .iter()
            .zip(&rounds)
            .find(|(p, _)| p.name == name)
            .map(|(_, r)| median(r.iter().map(|f| f[j].rps).collect()))
    };
    if let (Some(h1), Some(h2), Some(p1), Some(p2)) = (
        rps_of("waypoint", 0),
        rps_of("waypoint", 1),
        rps_of("waypoint-policies", 0),
        rps_of("waypoint-policies", 1),
    ) {
        println!(
            "\nwaypoint-policies (10 ALLOW policies x 10 rules, a JWT on every request): {:.0}% of the waypoint's req/s over HTTP/1.1, {:.0}% over HTTP/2",
            100.0 * p1 / h1,
            100.0 * p2 / h2
        );
    }

    // Memory: idle, and the peak under many streams at once.
    let mut memory = Vec::new();
    for path in paths.iter().filter(|p| !p.pids.is_empty() && p.name != "waypoint-policies") {
        let pid = path.pids[0];
        let idle =
            if path.name == "waypoint" { waypoint_idle_kib } else { process_stats(pid).rss_kib };
        let peak_known = reset_peak(pid);
        let (_, _, errors) = load(
            &path.client_netns,
            path.http2,
            true,
            args.many_streams,
            args.seconds.min(3.0),
            path.token.as_deref(),
        )?;
        let peak = process_stats(pid).peak_kib;
        memory.push((path.name, idle, peak_known.then_some(peak), errors));
    }
    println!("\nmemory: RSS idle, and peak under {} HTTP/2 streams in flight", args.many_streams);
    for (name, idle, peak, errors) in memory {
        let peak = peak.map_or("-".into(), |p| format!("{:.1} MiB", p as f64 / 1024.0));
        println!(
            "{name:<13} idle {:.1} MiB   peak {peak}   ({errors} errors)",
            idle as f64 / 1024.0
        );
    }
    println!(
        "\n(the client's and the backend's ztunnels used {ztunnel_cpu_note:.2} CPU-s in all, the same work on every mesh path; not counted above)"
    );
    drop(children);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
