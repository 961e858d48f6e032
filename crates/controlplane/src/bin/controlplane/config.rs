//! Flags and environment: the only place the binary reads them. Every bad
//! value is reported at once, naming the flag and what was expected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use controlplane::ca::ServingName;
use controlplane::model::MeshConfig;
use mesh_core::Identity;

/// The mesh control plane: serves delta xDS and the mesh CA.
#[derive(Debug, Parser)]
#[command(name = "controlplane", version)]
pub(crate) struct Flags {
    /// Directory of Kubernetes YAML to serve (the local mesh's cluster).
    #[arg(long, env = "MESH_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API instead (KUBECONFIG, or in-cluster).
    #[arg(long, env = "MESH_KUBERNETES")]
    kubernetes: bool,
    /// Where the CA's key material is kept (Istio's cacerts layout).
    #[arg(long, env = "MESH_CA_DIR", default_value = "/var/lib/mesh/ca")]
    ca_dir: PathBuf,
    /// Trust domain of every identity.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Kubernetes cluster DNS domain.
    #[arg(long, env = "MESH_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Namespace whose policies apply mesh-wide.
    #[arg(long, env = "MESH_ROOT_NAMESPACE", default_value = "istio-system")]
    root_namespace: String,
    /// Namespace the control plane runs in (part of its identity).
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// Service account the control plane runs as (part of its identity).
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", default_value = "controlplane")]
    service_account: String,
    /// Address for xDS and the CA over mesh TLS.
    #[arg(long, env = "MESH_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    grpc_addr: String,
    /// Address for plaintext xDS (local debugging only; off when unset).
    #[arg(long, env = "MESH_PLAINTEXT_ADDR")]
    plaintext_addr: Option<String>,
    /// Address of the debug endpoint (JSON: connections, rejected objects);
    /// empty to disable.
    #[arg(long, env = "MESH_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    admin_addr: String,
    /// In a cluster: `<namespace>/<service account>` node proxies run as.
    #[arg(long, env = "MESH_NODE_PROXY_ACCOUNT", default_value = "istio-system/ztunnel")]
    node_proxy_account: String,
    /// File of per-node bootstrap tokens, one `<node> <token>` per line.
    #[arg(long, env = "MESH_BOOTSTRAP_TOKENS")]
    bootstrap_tokens: Option<PathBuf>,
    /// More names for the serving certificate, comma-separated DNS names or
    /// IPs (the address clients dial, when they check it). Always present:
    /// istiod.istio-system.svc and controlplane.<namespace>.svc, short and
    /// with the cluster domain.
    #[arg(long, env = "MESH_SERVING_NAMES", default_value = "")]
    serving_names: String,
    /// How often to look for changes in the config directory, milliseconds.
    #[arg(long, env = "MESH_POLL_INTERVAL_MS", default_value = "1000")]
    poll_interval_ms: String,
}

/// The validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// `None`: the Kubernetes API.
    pub(crate) config_dir: Option<PathBuf>,
    pub(crate) ca_dir: PathBuf,
    pub(crate) mesh: MeshConfig,
    pub(crate) identity: Identity,
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) plaintext_addr: Option<SocketAddr>,
    pub(crate) admin_addr: Option<SocketAddr>,
    pub(crate) node_proxy_account: (String, String),
    pub(crate) bootstrap_tokens: Vec<(String, String)>,
    pub(crate) poll_interval: Duration,
    pub(crate) serving_names: Vec<ServingName>,
}

impl Flags {
    /// Checks every value; all problems together in one error.
    pub(crate) fn validate(self) -> Result<Config, String> {
        let mut problems = Vec::new();
        let mut addr = |flag: &str, value: &str| match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!("--{flag} {value:?}: expected <ip>:<port>"));
                None
            }
        };
        let grpc_addr = addr("grpc-addr", &self.grpc_addr);
        let plaintext_addr = self.plaintext_addr.as_deref().map(|v| addr("plaintext-addr", v));
        let admin_addr =
            (!self.admin_addr.is_empty()).then(|| addr("admin-addr", &self.admin_addr)).flatten();
        let identity = Identity::new(&self.trust_domain, &self.namespace, &self.service_account)
            .map_err(|e| {
                problems.push(format!("--trust-domain/--namespace/--service-account: {e}"))
            })
            .ok();
        let node_proxy_account = match self.node_proxy_account.split_once('/') {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() => (ns.to_string(), sa.to_string()),
            _ => {
                problems.push(format!(
                    "--node-proxy-account {:?}: expected <namespace>/<service account>",
                    self.node_proxy_account
                ));
                (String::new(), String::new())
            }
        };
        let poll_interval = match self.poll_interval_ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Some(Duration::from_millis(ms)),
            _ => {
                problems.push(format!(
                    "--poll-interval-ms {:?}: expected a positive number of milliseconds",
                    self.poll_interval_ms
                ));
                None
            }
        };
        match (&self.config_dir, self.kubernetes) {
            (Some(dir), false) if !dir.is_dir() => {
                problems.push(format!("--config-dir {}: not a directory", dir.display()));
            }
            (Some(_), true) => problems.push("--config-dir and --kubernetes: choose one".into()),
            (None, false) => problems.push("--config-dir or --kubernetes: one is required".into()),
            _ => {}
        }
        let bootstrap_tokens = match &self.bootstrap_tokens {
            None => Vec::new(),
            Some(path) => match read_tokens(path) {
                Ok(tokens) => tokens,
                Err(e) => {
                    problems.push(format!("--bootstrap-tokens {}: {e}", path.display()));
                    Vec::new()
                }
            },
        };
        let mut serving_names =
            controlplane::server::default_serving_names(&self.namespace, &self.cluster_domain);
        for name in self.serving_names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.parse::<ServingName>() {
                Ok(n) if !serving_names.contains(&n) => serving_names.push(n),
                Ok(_) => {}
                Err(e) => problems.push(format!("--serving-names: {e}")),
            }
        }
        match (grpc_addr, identity, poll_interval, problems.is_empty()) {
            (Some(grpc_addr), Some(identity), Some(poll_interval), true) => Ok(Config {
                config_dir: self.config_dir,
                ca_dir: self.ca_dir,
                mesh: MeshConfig {
                    trust_domain: self.trust_domain,
                    cluster_domain: self.cluster_domain,
                    root_namespace: self.root_namespace,
                    cluster_id: "Kubernetes".into(),
                },
                identity,
                grpc_addr,
                plaintext_addr: plaintext_addr.flatten(),
                admin_addr,
                node_proxy_account,
                bootstrap_tokens,
                poll_interval,
                serving_names,
            }),
            _ => Err(problems.join("\n")),
        }
    }
}

/// `<node> <token>` per line; blank lines and `#` comments ignored.
fn read_tokens(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [node, token] => tokens.push((token.to_string(), node.to_string())),
            _ => return Err(format!("line {}: expected \"<node> <token>\"", n + 1)),
        }
    }
    Ok(tokens)
}
