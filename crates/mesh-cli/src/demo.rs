//! `meshctl demo`: the article's example, narrated. A two-node cluster in
//! network namespaces; sleep, helloworld (v1 and v2) and httpbin in an
//! ambient namespace, a web server in a second namespace outside the mesh;
//! then a waypoint, for L7.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use localmesh::{Cluster, ClusterSpec, Options};

/// The article's example.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Leave the cluster running at the end (remove it with
    /// `meshctl local down --name demo`).
    #[arg(long)]
    keep: bool,
}

const DEMO: &str = include_str!("../../../examples/ambient-demo.yaml");

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-from-sleep, namespace: ambient-demo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/ambient-demo/sa/sleep]}}]}]
"#;

const SPLIT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: helloworld-split, namespace: ambient-demo}
spec:
  parentRefs: [{group: "", kind: Service, name: helloworld, port: 5000}]
  rules:
  - backendRefs:
    - {name: helloworld-v1, port: 5000, weight: 90}
    - {name: helloworld-v2, port: 5000, weight: 10}
"#;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    crate::require_root("meshctl demo")?;
    let started = Instant::now();
    step(
        "Bringing up a two-node cluster in network namespaces: control plane, a node agent and a ztunnel per node",
    );
    let docs = localmesh::spec::parse(DEMO, "demo")?;
    let spec = ClusterSpec::from_documents(docs)?;
    let name = "demo";
    let options = Options {
        name: name.into(),
        state_dir: crate::local::state_dir(name),
        bin_dir: crate::bin_dir()?,
        ztunnels: Default::default(),
        agent_env: Vec::new(),
        waypoint_env: Vec::new(),
    };
    let mut cluster = Cluster::up(&spec, options).context("bringing the demo cluster up")?;
    for pod in &cluster.state().pods {
        say(&format!("pod {}/{} on {} at {}", pod.namespace, pod.name, pod.node, pod.ip));
    }
    say(&format!("ready in {:.1} s", started.elapsed().as_secs_f64()));

    let sleep = netns(&cluster, "ambient-demo", "sleep")?;
    let notsleep = netns(&cluster, "ambient-demo", "notsleep")?;
    let hello: SocketAddr = "10.96.0.30:5000".parse()?;
    let httpbin: SocketAddr = "10.96.0.31:8000".parse()?;

    step("sleep (node-a) calls the helloworld service (node-b), its app unchanged");
    let body = wait_for_get(&sleep, hello)?;
    say(&format!("helloworld answered: {}", body.trim()));
    let mut found = None;
    for _ in 0..20 {
        found = find_metric(&ztunnel_metrics(&cluster, "node-b")?, "helloworld");
        if found.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(line) = found {
        say("node-b's ztunnel reports the connection as mutual TLS between SPIFFE identities:");
        say(&format!("  source_principal      = {}", label(&line, "source_principal")));
        say(&format!("  destination_principal = {}", label(&line, "destination_principal")));
        say(&format!(
            "  connection_security_policy = {}",
            label(&line, "connection_security_policy")
        ));
    }

    step("An AuthorizationPolicy lets only sleep's identity reach httpbin");
    cluster.apply("demo-policy.yaml", &localmesh::spec::parse(POLICY, "policy")?)?;
    wait_until("the policy reaches node-b", || get(&notsleep, httpbin).is_none())?;
    say(&format!(
        "sleep    → httpbin: {}",
        get(&sleep, httpbin).map_or("refused".into(), |b| b.trim().to_string())
    ));
    say(&format!(
        "notsleep → httpbin: {}",
        get(&notsleep, httpbin)
            .map_or("refused (401 at the destination's ztunnel)".into(), |b| b.trim().to_string())
    ));

    step("A running pod joins the mesh without a restart");
    let legacy = cluster
        .pod("legacy", "legacy-web")
        .map(|p| SocketAddr::new(p.ip, 8080))
        .context("legacy-web")?;
    let before = mtls_count(&cluster, "legacy-web")?;
    say(&format!(
        "sleep → legacy/legacy-web: {} (plain TCP: legacy is outside the mesh)",
        get(&sleep, legacy).unwrap_or_default().trim()
    ));
    cluster.set_pod_label("legacy", "legacy-web", "istio.io/dataplane-mode", Some("ambient"))?;
    say("labelled the pod istio.io/dataplane-mode=ambient; the node agent captures it in place");
    wait_until("legacy-web is captured", || {
        get(&sleep, legacy).is_some()
            && mtls_count(&cluster, "legacy-web").is_ok_and(|n| n > before)
    })?;
    say(&format!(
        "sleep → legacy/legacy-web: {} (now mutual TLS; the server process never restarted)",
        get(&sleep, legacy).unwrap_or_default().trim()
    ));

    step("L7 without sidecars: a waypoint for the namespace (a Gateway of class istio-waypoint)");
    cluster.add_waypoint("ambient-demo", "waypoint", None).context("deploying the waypoint")?;
    cluster.set_namespace_label("ambient-demo", "istio.io/use-waypoint", Some("waypoint"))?;
    say(
        "labelled the namespace istio.io/use-waypoint=waypoint: its services' traffic now goes sleep → ztunnel → waypoint → ztunnel → helloworld, all HBONE",
    );
    wait_until("helloworld is served through the waypoint", || {
        get(&sleep, hello).is_some()
            && waypoint_requests(&cluster, "helloworld").is_some_and(|n| n > 0)
    })?;
    step("An HTTPRoute splits helloworld 90/10 between v1 and v2; the client is unchanged");
    cluster.apply("demo-split.yaml", &localmesh::spec::parse(SPLIT, "split")?)?;
    wait_until("the split is in force", || get(&sleep, hello).is_some_and(|b| b.contains("v2")))?;
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..200 {
        match get(&sleep, hello) {
            Some(b) if b.contains("v2") => v2 += 1,
            Some(_) => v1 += 1,
            None => {}
        }
    }
    say(&format!("200 requests from sleep: {v1} answered by v1, {v2} by v2"));
    if let Some(n) = waypoint_requests(&cluster, "helloworld") {
        say(&format!(
            "the waypoint counted {n} requests to helloworld (v1 and v2 services) in istio_requests_total{{reporter=\"waypoint\"}}, labelled with response codes and both identities"
        ));
    }

    if args.keep {
        step(
            "Leaving the cluster running: meshctl local status --name demo; meshctl proxy-config workloads --node node-a --name demo; meshctl proxy-config routes --waypoint ambient-demo/waypoint --name demo",
        );
        cluster.detach();
    } else {
        step("Cleaning up: every namespace and process the demo made is removed");
        drop(cluster);
    }
    say(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn say(text: &str) {
    println!("    {text}");
}

fn netns(c: &Cluster, ns: &str, pod: &str) -> anyhow::Result<String> {
    Ok(c.pod(ns, pod).with_context(|| format!("pod {ns}/{pod}"))?.netns.clone())
}

fn get(netns: &str, addr: SocketAddr) -> Option<String> {
    match localmesh::net::http_get(netns, addr, "/") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn wait_for_get(netns: &str, addr: SocketAddr) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = get(netns, addr) {
            return Ok(body);
        }
        anyhow::ensure!(Instant::now() < deadline, "no answer from {addr} after 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Requests the waypoint counted to the demo namespace's services whose
/// names start with `service` (a split reports each backend service).
fn waypoint_requests(c: &Cluster, service: &str) -> Option<u64> {
    let pod = c.pod("ambient-demo", "waypoint-0")?;
    let metrics =
        localmesh::net::http_get(&pod.netns, SocketAddr::new(pod.ip, 15020), "/metrics").ok()?.1;
    let wanted = format!("destination_service_name=\"{service}");
    Some(
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("reporter=\"waypoint\"")
                    && l.contains(&wanted)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

fn ztunnel_metrics(c: &Cluster, node: &str) -> anyhow::Result<String> {
    let n = c.node(node).with_context(|| format!("node {node}"))?;
    Ok(localmesh::net::http_get(&n.netns, "127.0.0.1:15020".parse()?, "/metrics")?.1)
}

/// Destination-side `connections_opened` samples in mutual TLS to `workload`.
fn mtls_lines<'a>(metrics: &'a str, workload: &'a str) -> impl Iterator<Item = &'a str> {
    metrics.lines().filter(move |l| {
        l.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\"")
            && l.contains(&format!("destination_canonical_service=\"{workload}\""))
            && l.contains("mutual_tls")
    })
}

fn find_metric(metrics: &str, workload: &str) -> Option<String> {
    mtls_lines(metrics, workload).next().map(str::to_string)
}

fn label(line: &str, key: &str) -> String {
    line.split(&format!("{key}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string()
}

fn mtls_count(c: &Cluster, workload: &str) -> anyhow::Result<u64> {
    let metrics = ztunnel_metrics(c, "node-b")?;
    Ok(mtls_lines(&metrics, workload)
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}
