//! The real `controlplane` binary against a directory of YAML: changes to
//! pods and policies reach a connected xDS client, and node proxies get
//! certificates for their pods.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_core::Identity;
use mesh_proto::type_url;
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use xds::{Handler, Rejected, Update, XdsClient, XdsClientConfig};

struct Running {
    _child: Child,
    grpc: SocketAddr,
    plaintext: SocketAddr,
    admin: SocketAddr,
    config: tempfile::TempDir,
    ca: tempfile::TempDir,
}

async fn start() -> Running {
    start_with(&[], &[]).await
}

/// Starts the binary; `source` replaces `--config-dir <tmp>` when given.
async fn start_with(source: &[&str], env: &[(&str, &str)]) -> Running {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    let tokens = config.path().join("tokens.txt");
    // Not YAML: the config source ignores it.
    std::fs::write(&tokens, "# node token\nnode-a secret-a\n").unwrap();
    let default_source = ["--config-dir", config.path().to_str().unwrap()];
    let mut child = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(if source.is_empty() { &default_source[..] } else { source })
        .envs(env.iter().copied())
        .args(["--ca-dir", ca.path().to_str().unwrap()])
        .args(["--grpc-addr", "127.0.0.1:0", "--plaintext-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--bootstrap-tokens", tokens.to_str().unwrap(), "--poll-interval-ms", "100"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("controlplane printed its addresses")
        .unwrap()
        .unwrap();
    let addr = |key: &str| -> SocketAddr {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(key)).unwrap().parse().unwrap()
    };
    let (grpc, plaintext, admin) = (addr("grpc="), addr("plaintext="), addr("admin="));
    Running { _child: child, grpc, plaintext, admin, config, ca }
}

/// GETs a path from the admin endpoint and parses the JSON body.
async fn admin_get(addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&admin_text(addr, path).await).unwrap()
}

/// GETs a path from the admin endpoint; the body as text.
async fn admin_text(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Holds the latest body of each resource of one type.
#[derive(Clone)]
struct Latest {
    type_url: &'static str,
    held: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Latest {
    fn new(type_url: &'static str) -> Self {
        Self { type_url, held: Arc::default() }
    }
    fn names(&self) -> Vec<String> {
        self.held.lock().unwrap().keys().cloned().collect()
    }
}

impl Handler for Latest {
    fn type_url(&self) -> &str {
        self.type_url
    }
    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        let mut held = self.held.lock().unwrap();
        for (name, body) in update.resources {
            held.insert(name, body.value);
        }
        for name in update.removed {
            held.remove(&name);
        }
        Ok(())
    }
}

/// Connects an xDS client to the plaintext port, holding addresses and
/// policies as they arrive.
fn subscribe(plaintext: SocketAddr) -> (Latest, Latest) {
    let addresses = Latest::new(type_url::ADDRESS);
    let policies = Latest::new(type_url::AUTHORIZATION);
    let client = XdsClient::new(
        xds::plaintext_channel(plaintext),
        XdsClientConfig::default(),
        vec![Box::new(addresses.clone()), Box::new(policies.clone())],
    );
    tokio::spawn(client.run(std::future::pending()));
    (addresses, policies)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(name: &str, ip: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec: {{serviceAccountName: {name}, nodeName: {node}, containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: {ip}, conditions: [{{type: Ready, status: 'True'}}]}}\n"
    )
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}\n";

#[tokio::test]
async fn pod_and_policy_changes_reach_a_connected_proxy() {
    let cp = start().await;
    std::fs::write(cp.config.path().join("ns.yaml"), NAMESPACE).unwrap();
    std::fs::write(cp.config.path().join("a.yaml"), pod("a", "10.0.1.1", "node-a")).unwrap();

    let (addresses, policies) = subscribe(cp.plaintext);
    eventually("pod a", || addresses.names() == ["Kubernetes//Pod/apps/a"]).await;

    // A new pod is a new workload; the old one is not resent needlessly.
    std::fs::write(cp.config.path().join("b.yaml"), pod("b", "10.0.1.2", "node-b")).unwrap();
    eventually("pod b", || addresses.names().len() == 2).await;
    let body = addresses.held.lock().unwrap()["Kubernetes//Pod/apps/b"].clone();
    let address = mesh_proto::workload::Address::decode(body.as_slice()).unwrap();
    let workload = match mesh_core::Address::try_from(&address).unwrap() {
        mesh_core::Address::Workload(w) => w,
        other => panic!("{other:?}"),
    };
    assert_eq!(workload.identity.to_string(), "spiffe://cluster.local/ns/apps/sa/b");

    // A policy appears, then a pod goes away.
    std::fs::write(
        cp.config.path().join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-22, namespace: apps}\nspec: {action: DENY, rules: [{to: [{operation: {ports: ['22']}}]}]}\n",
    )
    .unwrap();
    eventually("policy", || policies.names() == ["apps/deny-22"]).await;
    std::fs::remove_file(cp.config.path().join("a.yaml")).unwrap();
    eventually("pod a removed", || addresses.names() == ["Kubernetes//Pod/apps/b"]).await;

    // The debug endpoint shows the connected proxy and a rejected object.
    std::fs::write(cp.config.path().join("broken.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: apps}\nspec: {containers: 3}\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let config = loop {
        let config = admin_get(cp.admin, "/debug/config").await;
        if !config["rejected"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break config;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rejected = &config["rejected"][0];
    assert_eq!(rejected["object"], "Pod apps/bad", "{config}");
    assert!(
        rejected["source"].as_str().unwrap().ends_with("broken.yaml (document 1, from line 1)")
    );
    let metrics = admin_text(cp.admin, "/metrics").await;
    assert!(metrics.contains("mesh_config_rejected_objects 1"), "{metrics}");
    assert!(metrics.contains("mesh_xds_connected_clients 1"), "{metrics}");
    let connections = admin_get(cp.admin, "/debug/connections").await;
    let held = &connections["connections"][0]["held"];
    assert_eq!(held[type_url::ADDRESS], 1, "{connections}");
    assert_eq!(held[type_url::AUTHORIZATION], 1, "{connections}");
}

#[tokio::test]
async fn a_node_proxy_bootstraps_a_certificate_over_tls() {
    let cp = start().await;
    std::fs::write(cp.config.path().join("ns.yaml"), NAMESPACE).unwrap();
    std::fs::write(cp.config.path().join("a.yaml"), pod("a", "10.0.1.1", "node-a")).unwrap();
    // The CA material is generated as the process starts.
    let root_file = cp.ca.path().join("root-cert.pem");
    eventually("CA material written", || root_file.exists()).await;
    let root = std::fs::read_to_string(&root_file).unwrap();
    let roots = hbone::TrustBundle::from_pem(&root).unwrap();
    let control_plane: Identity =
        "spiffe://cluster.local/ns/istio-system/sa/controlplane".parse().unwrap();
    let tls = hbone::tls::client_config_without_cert(&roots, &[control_plane]).unwrap();
    let mut ca =
        mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient::new(
            xds::tls_channel(cp.grpc, tls),
        );
    let wanted: Identity = "spiffe://cluster.local/ns/apps/sa/a".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let chain = loop {
        let csr = hbone::CertificateRequest::generate(&wanted).unwrap();
        let mut request = tonic::Request::new(mesh_proto::ca::IstioCertificateRequest {
            csr: csr.csr_pem.clone(),
            validity_duration: 3600,
            metadata: Some(prost_types::Struct {
                fields: [(
                    "ImpersonatedIdentity".to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(wanted.to_string())),
                    },
                )]
                .into(),
            }),
        });
        request.metadata_mut().insert("authorization", "Bearer secret-a".parse().unwrap());
        match ca.create_certificate(request).await {
            Ok(response) => {
                break csr
                    .into_certificate(&response.into_inner().cert_chain.concat(), roots.clone());
            }
            // Until the config is loaded, the pod is not known on node-a yet.
            Err(status)
                if status.code() == tonic::Code::PermissionDenied && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("certificate refused: {status:?}"),
        }
    };
    assert_eq!(chain.unwrap().identity(), &wanted);
}

#[tokio::test]
async fn the_kubernetes_source_follows_list_watch_including_410_gone() {
    let api = testkit::FakeApiServer::start(Duration::from_secs(1)).await;
    let json = |yaml: &str| -> serde_json::Value { serde_saphyr::from_str(yaml).unwrap() };
    api.apply(json(NAMESPACE));
    api.apply(json(&pod("a", "10.0.1.1", "node-a")));
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), api.kubeconfig()).unwrap();
    let cp =
        start_with(&["--kubernetes"], &[("KUBECONFIG", kubeconfig.path().to_str().unwrap())]).await;

    let (addresses, policies) = subscribe(cp.plaintext);
    eventually("pod a from the API server", || addresses.names() == ["Kubernetes//Pod/apps/a"])
        .await;

    // Watch events: added, deleted.
    api.apply(json(&pod("b", "10.0.1.2", "node-b")));
    eventually("pod b added", || addresses.names().len() == 2).await;
    api.delete("Pod", "apps", "a");
    eventually("pod a deleted", || addresses.names() == ["Kubernetes//Pod/apps/b"]).await;

    // Policies come through the API too.
    api.apply(json(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-22, namespace: apps}\nspec: {action: DENY, rules: [{to: [{operation: {ports: ['22']}}]}]}\n",
    ));
    eventually("policy", || policies.names() == ["apps/deny-22"]).await;
    // In a cluster the CA keeps its material in a Secret.
    assert!(api.get("secrets", "istio-system", "mesh-ca-secret").is_some(), "CA Secret created");

    // History is compacted while watches are open; when they end (after a
    // second) and resume from an old resourceVersion, the server answers
    // 410 Gone and the watcher must list again to see the next change.
    api.compact();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.apply(json(&pod("c", "10.0.1.3", "node-a")));
    eventually("pod c after relist", || {
        addresses.names().len() == 2
            && addresses.names().contains(&"Kubernetes//Pod/apps/c".to_string())
    })
    .await;
}

#[tokio::test]
async fn routing_objects_get_a_status_saying_what_was_not_applied() {
    let api = testkit::FakeApiServer::start(Duration::from_secs(30)).await;
    let json = |yaml: &str| -> serde_json::Value { serde_saphyr::from_str(yaml).unwrap() };
    api.apply(json("apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {istio.io/use-waypoint: waypoint}}\n"));
    api.apply(json(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: apps}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n",
    ));
    api.apply(json("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n"));
    api.apply(json(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: apps}\nspec: {parentRefs: [{group: '', kind: Service, name: web}], rules: [{backendRefs: [{name: ghost, port: 80}]}]}\n",
    ));
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), api.kubeconfig()).unwrap();
    let cp =
        start_with(&["--kubernetes"], &[("KUBECONFIG", kubeconfig.path().to_str().unwrap())]).await;
    let condition = |kind: &str| {
        api.get("httproutes", "apps", "r").and_then(|r| {
            r["status"]["parents"][0]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == kind)
                .cloned()
        })
    };
    eventually("the route's status", || condition("ResolvedRefs").is_some()).await;
    let resolved = condition("ResolvedRefs").unwrap();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    assert!(resolved["message"].as_str().unwrap().contains("ghost"), "{resolved}");
    let accepted = condition("Accepted").unwrap();
    let config = admin_get(cp.admin, "/debug/config").await;
    assert_eq!(accepted["status"], "True", "{accepted} {config}");
    let route = api.get("httproutes", "apps", "r").unwrap();
    assert_eq!(route["status"]["parents"][0]["controllerName"], "istio.io/gateway-controller");

    // Written once: the status change comes back as a watch event and the
    // same status is not written again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.status_patches(), 1);

    // Fixed: the backend exists now, and the status says so.
    api.apply(json("apiVersion: v1\nkind: Service\nmetadata: {name: ghost, namespace: apps}\nspec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n"));
    eventually("the route resolves", || {
        condition("ResolvedRefs").is_some_and(|c| c["status"] == "True")
    })
    .await;
}

#[tokio::test]
async fn the_fake_api_server_filters_by_label() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = testkit::FakeApiServer::start(Duration::from_secs(1)).await;
    let json = |yaml: &str| -> serde_json::Value { serde_saphyr::from_str(yaml).unwrap() };
    api.apply(json(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-pod, namespace: a, labels: {app: web}}\n",
    ));
    api.apply(json(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db-pod, namespace: a, labels: {app: db}}\n",
    ));
    let mut tcp = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    tcp.write_all(b"GET /api/v1/pods?labelSelector=app%3Dweb HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let body: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-pod"]);
    assert_eq!(body["metadata"]["resourceVersion"], "2");
}

/// A TLS handshake with the control plane by a standard client that checks
/// `name` in the serving certificate, as Istio's ztunnel does.
async fn handshake_as(grpc: SocketAddr, root_pem: &str, name: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_serving_certificate_verifies_by_hostname_as_istiod_and_by_configured_names() {
    let cp = start_with(&[], &[("MESH_SERVING_NAMES", "cp.example.internal, 10.9.8.7")]).await;
    let root_file = cp.ca.path().join("root-cert.pem");
    eventually("CA material written", || root_file.exists()).await;
    let root = std::fs::read_to_string(&root_file).unwrap();
    for name in [
        "istiod.istio-system.svc",
        "istiod.istio-system.svc.cluster.local",
        "controlplane.istio-system.svc",
        "cp.example.internal",
        "10.9.8.7",
    ] {
        handshake_as(cp.grpc, &root, name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["other.istio-system.svc", "10.9.8.6"] {
        let refused = handshake_as(cp.grpc, &root, name).await.unwrap_err();
        assert!(refused.contains("not valid for name"), "{name}: {refused}");
    }
}

#[test]
fn a_bad_serving_name_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["--config-dir", "/", "--serving-names", "ok.example,not a name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--serving-names: \"not a name\" is neither an IP address nor a DNS name"),
        "{stderr}"
    );
}
