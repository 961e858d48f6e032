//! Control-plane scale: 10,000 pods, 2,000 services and 1,000 policies from
//! generated YAML. Prints time to the first full snapshot, time from one pod
//! change to the delta being ready, the delta's size, and resident memory.
//!
//! `cargo bench -p controlplane --bench scale` (figures in docs/performance.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::time::Instant;

use controlplane::config::files::load_dir;
use controlplane::model::{MeshConfig, Model};
use mesh_proto::type_url;
use xds::SnapshotStore;

const NAMESPACES: usize = 10;
const SERVICES: usize = 2_000;
const PODS: usize = 10_000;
const POLICIES: usize = 1_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn generate(dir: &std::path::Path) {
    let mut ns = String::new();
    for n in 0..NAMESPACES {
        writeln!(ns, "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{istio.io/dataplane-mode: ambient}}}}\n---").unwrap();
    }
    std::fs::write(dir.join("namespaces.yaml"), ns).unwrap();
    let mut svcs = String::new();
    for s in 0..SERVICES {
        let n = s % NAMESPACES;
        writeln!(
            svcs,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: ns{n}}}\n\
             spec: {{clusterIP: 10.96.{}.{}, selector: {{app: svc{s}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---",
            s / 250,
            s % 250 + 1
        )
        .unwrap();
    }
    std::fs::write(dir.join("services.yaml"), svcs).unwrap();
    let mut pods = String::new();
    for p in 0..PODS {
        let s = p % SERVICES;
        let n = s % NAMESPACES;
        writeln!(
            pods,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{p}, namespace: ns{n}, labels: {{app: svc{s}}}}}\n\
             spec: {{serviceAccountName: sa{s}, nodeName: node{}, containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]}}\n\
             status: {{phase: Running, podIP: 10.{}.{}.{}, conditions: [{{type: Ready, status: 'True'}}]}}\n---",
            p % 100,
            p / 65_000 + 1,
            (p / 250) % 256,
            p % 250 + 1
        )
        .unwrap();
    }
    std::fs::write(dir.join("pods.yaml"), pods).unwrap();
    let mut policies = String::new();
    for a in 0..POLICIES {
        let n = a % NAMESPACES;
        writeln!(
            policies,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{a}, namespace: ns{n}}}\n\
             spec: {{selector: {{matchLabels: {{app: svc{a}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/ns{n}/sa/sa{}]}}}}], to: [{{operation: {{ports: ['8080']}}}}]}}]}}\n---",
            (a + 1) % SERVICES
        )
        .unwrap();
    }
    std::fs::write(dir.join("policies.yaml"), policies).unwrap();
}

fn versions(store: &SnapshotStore) -> Vec<(String, String, Option<String>)> {
    [type_url::ADDRESS, type_url::AUTHORIZATION]
        .into_iter()
        .flat_map(|t| store.names(t).into_iter().map(move |n| (t.to_string(), n)))
        .map(|(t, n)| {
            let v = store.version(&t, &n);
            (t, n, v)
        })
        .collect()
}

fn main() {
    // Test runners list a bench binary's tests (`--list`) and run it without
    // `--bench`: this one has no tests, and runs only under `cargo bench`.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let mesh = MeshConfig::default();
    let rss_before = rss_mib();

    let start = Instant::now();
    let snapshot = load_dir(dir.path());
    let parsed = start.elapsed();
    assert!(snapshot.bad.is_empty(), "{:?}", &snapshot.bad[..snapshot.bad.len().min(3)]);
    let model = Model::compute(&snapshot.state, &mesh);
    let computed = start.elapsed();
    let store = SnapshotStore::new();
    controlplane::push::publish(&store, &model, None);
    let published = start.elapsed();
    let rss_loaded = rss_mib();
    assert_eq!(model.workloads.len(), PODS);

    // One pod changes its readiness.
    let mut state = snapshot.state.clone();
    let before = versions(&store);
    let full_model = model.clone();
    let pod = state.pods.get_mut(&("ns3".to_string(), "pod3".to_string())).unwrap();
    pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    // Whole recomputation, for comparison.
    let start = Instant::now();
    let _ = Model::compute(&state, &mesh);
    let whole = start.elapsed();
    let start = Instant::now();
    let model = full_model.update(&snapshot.state, &state, &mesh);
    let recomputed = start.elapsed();
    controlplane::push::publish(&store, &model, Some(&full_model));
    let delta_ready = start.elapsed();
    let after = versions(&store);
    let changed = after.iter().filter(|v| !before.contains(v)).count();

    println!(
        "control-plane scale: {PODS} pods, {SERVICES} services, {POLICIES} policies, {NAMESPACES} namespaces"
    );
    println!(
        "  first snapshot: parse {:.0} ms, model {:.0} ms, publish {:.0} ms, total {:.0} ms",
        parsed.as_secs_f64() * 1e3,
        (computed - parsed).as_secs_f64() * 1e3,
        (published - computed).as_secs_f64() * 1e3,
        published.as_secs_f64() * 1e3
    );
    println!(
        "  one pod change → delta ready: {:.1} ms (incremental model {:.1} ms; the whole model takes {:.1} ms); delta: {changed} resource(s) of {}",
        delta_ready.as_secs_f64() * 1e3,
        recomputed.as_secs_f64() * 1e3,
        whole.as_secs_f64() * 1e3,
        after.len()
    );
    println!(
        "  resident memory: {rss_before:.0} MiB before, {rss_loaded:.0} MiB with everything loaded"
    );
}
