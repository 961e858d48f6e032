//! Bringing a cluster up and down.
//!
//! Layout (all addresses live inside namespaces the cluster made, so
//! clusters never collide on addresses, only on names):
//! - `ml-<name>-fabric`: bridge `br0` 172.30.0.254/24, where the control
//!   plane listens; each node's `eth0` (172.30.0.<i>) plugs into it, and a
//!   route to each node's pod CIDR goes through that node.
//! - `ml-<name>-<node>`: node i, bridge `br0` 10.244.<i>.1/24 for its pods,
//!   forwarding on, a route to every other node's pod CIDR. The node agent
//!   and ztunnel run here.
//! - `ml-<name>-<ns>-<pod>`: `eth0` 10.244.<i>.<k>/24, default route via
//!   its node. Its containers' commands run here.
//!
//! Every namespace and process is recorded in `state.json` as it is made,
//! so `down` can undo a crashed `up`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::environment::environment_for;
use crate::net::{NetError, delete_netns, http_get, ip, netns_with_prefix};
use crate::spec::{ClusterSpec, PodSpec};

/// The control plane's address in the fabric.
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 254);

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Its name (namespace prefix `ml-<name>-`).
    pub name: String,
    /// Where state, configuration, the CA and logs go.
    pub state_dir: PathBuf,
    /// Where `controlplane`, `ztunnel`, `mesh-cni`, `waypoint` and
    /// `mesh-sample` are.
    pub bin_dir: PathBuf,
    /// Nodes that run another ztunnel than `bin_dir`'s, by node name.
    pub ztunnels: BTreeMap<String, NodeZtunnel>,
    /// Environment for every node agent (`REDIRECT_BACKEND=nftables`...).
    pub agent_env: Vec<(String, String)>,
    /// Environment for every waypoint (`WORKER_THREADS=1`...).
    pub waypoint_env: Vec<(String, String)>,
}

/// A ztunnel binary for one node, and how it is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeZtunnel {
    /// The binary.
    pub program: PathBuf,
    /// How to configure it.
    pub flavour: Flavour,
}

/// How a ztunnel binary is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Ours: flags.
    Ours,
    /// Istio's: only its environment (`XDS_ADDRESS`, `XDS_ROOT_CA`,
    /// `INPOD_UDS`, ...; `docs/interop.md`) and its token at
    /// `./var/run/secrets/tokens/istio-token` in its working directory.
    /// Our ztunnel reads that environment too.
    Istio,
}

impl std::str::FromStr for NodeZtunnel {
    type Err = String;

    /// `PATH` or `PATH:istio` / `PATH:ours`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, flavour) = match s.rsplit_once(':') {
            Some((path, "istio")) => (path, Flavour::Istio),
            Some((path, "ours")) => (path, Flavour::Ours),
            _ => (s, Flavour::Ours),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: expected PATH[:istio|:ours]"));
        }
        Ok(Self { program: PathBuf::from(path), flavour })
    }
}

/// The environment Istio's ztunnel is configured by, for one node of a
/// local cluster (what Istio's Helm chart sets, pointed at our control
/// plane and node agent), plus two of ours that Istio's ignores.
pub fn istio_environment(
    node: &str,
    control_plane: &str,
    root: &str,
    zds: &str,
) -> Vec<(String, String)> {
    let url = format!("https://{control_plane}:15012");
    let pod = format!("ztunnel-{node}");
    [
        ("XDS_ADDRESS", url.as_str()),
        ("CA_ADDRESS", &url),
        ("XDS_ROOT_CA", root),
        ("CA_ROOT_CA", root),
        ("ALT_XDS_HOSTNAME", "istiod.istio-system.svc"),
        ("ALT_CA_HOSTNAME", "istiod.istio-system.svc"),
        ("INPOD_UDS", zds),
        ("NODE_NAME", node),
        ("POD_NAME", &pod),
        ("POD_NAMESPACE", "istio-system"),
        ("CLUSTER_ID", "Kubernetes"),
        ("TRUST_DOMAIN", "cluster.local"),
        ("PROXY_MODE", "shared"),
        ("DNS_UPSTREAM", "127.0.0.1:53"),
        ("DRAIN_DEADLINE_SECONDS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What was made, for `down` and for tools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The cluster's name.
    pub name: String,
    /// Namespaces made, in order.
    pub netns: Vec<String>,
    /// Processes started.
    pub pids: Vec<u32>,
    /// The control plane, agents and ztunnels, by label, for restarts.
    pub components: Vec<Component>,
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
    /// Pods.
    pub pods: Vec<PodInfo>,
}

/// A mesh process of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Component {
    /// `controlplane`, `agent-<node>`, `ztunnel-<node>`.
    pub label: String,
    /// Its namespace.
    pub netns: String,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment beyond the usual.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Its working directory, when not ours.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The running process.
    pub pid: u32,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its address on the fabric.
    pub ip: IpAddr,
    /// Its pods' /24.
    pub pod_cidr: String,
}

/// One pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodInfo {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Node.
    pub node: String,
    /// Address.
    pub ip: IpAddr,
    /// Its network namespace.
    pub netns: String,
    /// Its containers' processes.
    #[serde(default)]
    pub containers: Vec<u32>,
}

/// Why a cluster could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Networking failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A file could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The spec is not usable.
    #[error("{0}")]
    Spec(String),
    /// A component did not come up.
    #[error("{what} not ready after {seconds} s; see {log}")]
    NotReady {
        /// Which.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Its log.
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// A running local cluster.
#[derive(Debug)]
pub struct Cluster {
    options: Options,
    state: State,
    spec_pods: BTreeMap<(String, String), Value>,
    /// Whether dropping this handle tears the cluster down (tests) or
    /// leaves it running (`meshctl local up`).
    down_on_drop: bool,
}

impl Cluster {
    /// Builds and starts everything; on failure, undoes what it made.
    pub fn up(spec: &ClusterSpec, options: Options) -> Result<Self, ClusterError> {
        if let Some(node) = options.ztunnels.keys().find(|n| !spec.nodes.contains(n)) {
            return Err(ClusterError::Spec(format!(
                "another ztunnel is given for node {node}, which the cluster does not have (nodes: {})",
                spec.nodes.join(", ")
            )));
        }
        // Whatever a previous run with this name left (even a killed one):
        // its processes and namespaces, then its files.
        down(&options.name, &options.state_dir);
        for sub in ["config", "ca", "logs", "nodes"] {
            let _ = std::fs::remove_dir_all(options.state_dir.join(sub));
        }
        let mut cluster = Cluster {
            state: State { name: options.name.clone(), ..State::default() },
            options,
            spec_pods: BTreeMap::new(),
            down_on_drop: true,
        };
        match cluster.build(spec) {
            Ok(()) => Ok(cluster),
            Err(e) => {
                down(&cluster.options.name, &cluster.options.state_dir);
                Err(e)
            }
        }
    }

    /// What was made.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.state.pods.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.state.nodes.iter().find(|n| n.name == name)
    }

    fn prefix(&self) -> String {
        format!("ml-{}-", self.options.name)
    }

    fn save(&self) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        std::fs::write(self.options.state_dir.join("state.json"), text)
            .map_err(io("writing state.json"))
    }

    fn netns(&mut self, name: String) -> Result<String, ClusterError> {
        delete_netns(&name);
        ip(&["netns", "add", &name])?;
        self.state.netns.push(name.clone());
        self.save()?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    fn build(&mut self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        let dir = self.options.state_dir.clone();
        for sub in ["config", "ca", "logs", "nodes"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}", dir.join(sub).display())))?;
        }
        self.save()?;
        let fabric = self.netns(format!("{}fabric", self.prefix()))?;
        ip(&["-n", &fabric, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fabric, "addr", "add", &format!("{CONTROL_PLANE_IP}/24"), "dev", "br0"])?;
        ip(&["-n", &fabric, "link", "set", "br0", "up"])?;

        if spec.nodes.len() > 200 {
            return Err(ClusterError::Spec("at most 200 nodes".into()));
        }
        for (i, node) in spec.nodes.iter().enumerate() {
            let i = i + 1;
            let ns = self.netns(format!("{}{node}", self.prefix()))?;
            let peer = format!("n{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &peer,
                "netns", &fabric,
            ])?;
            ip(&["-n", &fabric, "link", "set", &peer, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("172.30.0.{i}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &ns, "addr", "add", &format!("10.244.{i}.1/24"), "dev", "br0"])?;
            ip(&["-n", &ns, "link", "set", "br0", "up"])?;
            enable_forwarding(&ns)?;
            self.state.nodes.push(NodeInfo {
                name: node.clone(),
                netns: ns,
                ip: IpAddr::V4(Ipv4Addr::new(172, 30, 0, i as u8)),
                pod_cidr: format!("10.244.{i}.0/24"),
            });
        }
        let nodes = self.state.nodes.clone();
        // The fabric reaches every node's pods (a waypoint pod talks to the
        // control plane from its own address).
        for node in &nodes {
            ip(&["-n", &fabric, "route", "add", &node.pod_cidr, "via", &node.ip.to_string()])?;
        }
        for (i, node) in nodes.iter().enumerate() {
            for (j, other) in nodes.iter().enumerate() {
                if i != j {
                    ip(&[
                        "-n",
                        &node.netns,
                        "route",
                        "add",
                        &other.pod_cidr,
                        "via",
                        &other.ip.to_string(),
                    ])?;
                }
            }
        }
        self.save()?;

        // Pods: network first, so the control plane sees them with addresses.
        let mut next_host: BTreeMap<String, u8> = BTreeMap::new();
        let mut round_robin = 0;
        let mut pod_objects = Vec::new();
        for pod in &spec.pods {
            let node_name = match &pod.node {
                Some(n) => n.clone(),
                None => {
                    round_robin += 1;
                    nodes[(round_robin - 1) % nodes.len()].name.clone()
                }
            };
            let Some((index, node)) = nodes.iter().enumerate().find(|(_, n)| n.name == node_name)
            else {
                return Err(ClusterError::Spec(format!(
                    "pod {}/{}: node {node_name} is not declared",
                    pod.namespace, pod.name
                )));
            };
            let host = next_host.entry(node.name.clone()).or_insert(1);
            *host += 1;
            if *host > 250 {
                return Err(ClusterError::Spec(format!("node {} has too many pods", node.name)));
            }
            let object = self.add_pod_network(pod, index, *host)?;
            pod_objects.push(object);
        }

        // What the control plane and node agents read.
        let mut objects = spec.objects.clone();
        for node in &nodes {
            objects
                .push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name}}));
        }
        write_yaml(&dir.join("config/objects.yaml"), &objects)?;
        write_yaml(&dir.join("config/pods.yaml"), &pod_objects)?;
        let mut tokens = String::new();
        for node in &nodes {
            let token = format!("bootstrap-{}-{}", node.name, std::process::id());
            tokens += &format!("{} {token}\n", node.name);
            let node_dir = dir.join("nodes").join(&node.name);
            std::fs::create_dir_all(&node_dir).map_err(io("creating node dir"))?;
            write_secret(&node_dir.join("token"), &token)?;
        }
        write_secret(&dir.join("tokens"), &tokens)?;

        // The control plane.
        let cp = format!("{CONTROL_PLANE_IP}");
        let dir_s = |p: &str| dir.join(p).display().to_string();
        self.spawn(
            &fabric,
            "controlplane",
            &[
                "--config-dir",
                &dir_s("config"),
                "--ca-dir",
                &dir_s("ca"),
                "--grpc-addr",
                &format!("{cp}:15012"),
                "--admin-addr",
                &format!("{cp}:15014"),
                "--bootstrap-tokens",
                &dir_s("tokens"),
                "--poll-interval-ms",
                "200",
            ],
            "controlplane",
        )?;
        let root = dir.join("ca/root-cert.pem");
        wait(
            "the control plane",
            &dir_s("logs/controlplane.log"),
            Duration::from_secs(60),
            || {
                root.exists()
                    && crate::net::connect_from(
                        &fabric,
                        SocketAddr::new(IpAddr::V4(CONTROL_PLANE_IP), 15012),
                        Duration::from_millis(200),
                    )
                    .is_ok()
            },
        )?;

        // Per node: the agent, then ztunnel.
        for node in &nodes {
            let node_dir = dir.join("nodes").join(&node.name);
            let zds = node_dir.join("zds.sock").display().to_string();
            let agent_env = self.options.agent_env.clone();
            self.spawn_with(
                &node.netns,
                "mesh-cni",
                &[
                    "agent",
                    "--node-name",
                    &node.name,
                    "--config-dir",
                    &dir_s("config"),
                    "--poll-interval-ms",
                    "200",
                    "--zds-socket",
                    &zds,
                    "--probe-source",
                    "none",
                    "--metrics-addr",
                    "127.0.0.1:15022",
                ],
                agent_env,
                None,
                &format!("agent-{}", node.name),
            )?;
            let label = format!("ztunnel-{}", node.name);
            let chosen = self.options.ztunnels.get(&node.name).cloned();
            let program = match &chosen {
                Some(z) => z.program.display().to_string(),
                None => "ztunnel".to_string(),
            };
            if chosen.as_ref().is_some_and(|z| z.flavour == Flavour::Istio) {
                // Istio's token path, relative to the working directory.
                let tokens = node_dir.join("var/run/secrets/tokens");
                std::fs::create_dir_all(&tokens).map_err(io("creating the token dir"))?;
                let token = std::fs::read_to_string(node_dir.join("token"))
                    .map_err(io("reading the node token"))?;
                write_secret(&tokens.join("istio-token"), &token)?;
                let env = istio_environment(&node.name, &cp, &root.display().to_string(), &zds);
                self.spawn_with(&node.netns, &program, &[], env, Some(node_dir.clone()), &label)?;
            } else {
                self.spawn(
                    &node.netns,
                    &program,
                    &[
                        "--node-name",
                        &node.name,
                        "--xds-address",
                        &format!("{cp}:15012"),
                        "--root-cert",
                        &root.display().to_string(),
                        "--ca-token-file",
                        &node_dir.join("token").display().to_string(),
                        "--zds-socket",
                        &zds,
                        "--dns-upstream",
                        "127.0.0.1:53",
                        "--drain-deadline-seconds",
                        "5",
                    ],
                    &label,
                )?;
            }
        }
        for node in &nodes {
            let ns = node.netns.clone();
            let log = dir_s(&format!("logs/ztunnel-{}.log", node.name));
            wait(&format!("ztunnel on {}", node.name), &log, Duration::from_secs(60), || {
                http_get(&ns, SocketAddr::from(([127, 0, 0, 1], 15021)), "/healthz/ready")
                    .is_ok_and(|(status, _)| status == 200)
            })?;
        }

        // The containers, with the downward API's names in their environment.
        for pod in &spec.pods {
            let Some(info) = self.pod(&pod.namespace, &pod.name).cloned() else { continue };
            let env = [
                ("POD_NAME".to_string(), pod.name.clone()),
                ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
                ("INSTANCE_IP".to_string(), info.ip.to_string()),
            ];
            for (i, command) in pod.commands.iter().enumerate() {
                let program = self.resolve(&command[0]);
                let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
                let log = format!("{}-{}-{i}", pod.namespace, pod.name);
                let pid = self.spawn_program(&info.netns, &program, &args, &env, None, &log)?;
                if let Some(p) = self.state.pods.iter_mut().find(|p| p.netns == info.netns) {
                    p.containers.push(pid);
                }
            }
            if pod.waypoint.is_some() {
                self.start_waypoint(pod, &info)?;
            }
        }
        self.save()?;
        for pod in spec.pods.iter().filter(|p| p.waypoint.is_some()) {
            self.wait_waypoint(pod)?;
        }
        Ok(())
    }

    /// A pod's namespace, address and link to its node (host `host` of
    /// node `index`); returns its object as the control plane sees it.
    fn add_pod_network(
        &mut self,
        pod: &PodSpec,
        index: usize,
        host: u8,
    ) -> Result<Value, ClusterError> {
        let node = self.state.nodes[index].clone();
        let address = Ipv4Addr::new(10, 244, (index + 1) as u8, host);
        let ns = self.netns(format!("{}{}-{}", self.prefix(), pod.namespace, pod.name))?;
        let peer = format!("p{host}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &node.netns,
        ])?;
        ip(&["-n", &node.netns, "link", "set", &peer, "master", "br0", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &format!("10.244.{}.1", index + 1)])?;
        let info = PodInfo {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            node: node.name.clone(),
            ip: IpAddr::V4(address),
            netns: ns,
            containers: Vec::new(),
        };
        let object = running_pod(&pod.object, &info, &node);
        self.spec_pods.insert((pod.namespace.clone(), pod.name.clone()), object.clone());
        self.state.pods.push(info);
        self.save()?;
        Ok(object)
    }

    /// Starts the `waypoint` binary for a waypoint's pod, with its node's
    /// token naming the waypoint's identity (the CA checks that a pod with
    /// it runs on the node).
    fn start_waypoint(&mut self, pod: &PodSpec, info: &PodInfo) -> Result<(), ClusterError> {
        let gateway = pod.waypoint.clone().unwrap_or_default();
        let dir = self.options.state_dir.clone();
        let token = dir.join("nodes").join(&info.node).join("token").display().to_string();
        let root = dir.join("ca/root-cert.pem").display().to_string();
        let label = waypoint_label(&pod.namespace, &gateway);
        let pid = self.spawn_with(
            &info.netns,
            "waypoint",
            &[
                "--name",
                &gateway,
                "--namespace",
                &pod.namespace,
                "--service-account",
                &gateway,
                "--instance-ip",
                &info.ip.to_string(),
                "--xds-address",
                &format!("{CONTROL_PLANE_IP}:15012"),
                "--root-cert",
                &root,
                "--ca-token-file",
                &token,
                "--ca-impersonate",
            ],
            self.options.waypoint_env.clone(),
            None,
            &label,
        )?;
        if let Some(p) = self.state.pods.iter_mut().find(|p| p.netns == info.netns) {
            p.containers.push(pid);
        }
        self.save()
    }

    /// Waits until a waypoint's pod answers ready.
    fn wait_waypoint(&self, pod: &PodSpec) -> Result<(), ClusterError> {
        let Some(info) = self.pod(&pod.namespace, &pod.name).cloned() else { return Ok(()) };
        let label = waypoint_label(&pod.namespace, pod.waypoint.as_deref().unwrap_or_default());
        let log = self.options.state_dir.join(format!("logs/{label}.log")).display().to_string();
        wait(
            &format!("waypoint {}/{}", pod.namespace, pod.name),
            &log,
            Duration::from_secs(60),
            || {
                http_get(&info.netns, SocketAddr::new(info.ip, 15021), "/healthz/ready")
                    .is_ok_and(|(status, _)| status == 200)
            },
        )
    }

    /// Reopens a running cluster (for `meshctl`): its state and pods. The
    /// handle leaves the cluster running when dropped.
    pub fn reopen(options: Options) -> Result<Self, ClusterError> {
        let state = Self::read_state(&options.state_dir)?;
        let path = options.state_dir.join("config/pods.yaml");
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        let pods = crate::spec::parse(&text, "pods.yaml")
            .map_err(|e| ClusterError::Spec(e.to_string()))?;
        let spec_pods = pods
            .into_iter()
            .map(|p| {
                let key = (
                    p["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
                    p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                );
                (key, p)
            })
            .collect();
        Ok(Self { options, state, spec_pods, down_on_drop: false })
    }

    /// Adds a waypoint to a running cluster, as applying an
    /// `istio-waypoint` Gateway does in Kubernetes: the Gateway (labelled
    /// `istio.io/waypoint-for` when `waypoint_for` is given), its Service
    /// and its pod, started and waited for.
    pub fn add_waypoint(
        &mut self,
        namespace: &str,
        name: &str,
        waypoint_for: Option<&str>,
    ) -> Result<(), ClusterError> {
        if self.state.components.iter().any(|c| c.label == waypoint_label(namespace, name)) {
            return Err(ClusterError::Spec(format!("waypoint {namespace}/{name} exists already")));
        }
        let mut gateway = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        });
        if let Some(takes) = waypoint_for {
            set_label(&mut gateway, "istio.io/waypoint-for", Some(takes));
        }
        let (pod, service) =
            crate::spec::waypoint_for(&gateway).map_err(|e| ClusterError::Spec(e.to_string()))?;
        // The node with the fewest pods, and its next free address.
        let (index, node) = self
            .state
            .nodes
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| self.state.pods.iter().filter(|p| p.node == n.name).count())
            .ok_or_else(|| ClusterError::Spec("the cluster has no nodes".into()))?;
        let node = node.name.clone();
        let host = self
            .state
            .pods
            .iter()
            .filter(|p| p.node == node)
            .filter_map(|p| match p.ip {
                IpAddr::V4(v4) => Some(v4.octets()[3]),
                IpAddr::V6(_) => None,
            })
            .max()
            .unwrap_or(1)
            .checked_add(1)
            .filter(|h| *h <= 250)
            .ok_or_else(|| ClusterError::Spec(format!("node {node} has too many pods")))?;
        self.add_pod_network(&pod, index, host)?;
        let pods: Vec<Value> = self.spec_pods.values().cloned().collect();
        write_yaml(&self.options.state_dir.join("config/pods.yaml"), &pods)?;
        self.apply(&waypoint_file(namespace, name), &[gateway, service])?;
        let Some(info) = self.pod(&pod.namespace, &pod.name).cloned() else {
            return Err(ClusterError::Spec("the waypoint's pod vanished".into()));
        };
        self.start_waypoint(&pod, &info)?;
        self.wait_waypoint(&pod)
    }

    /// Removes a waypoint: its process, pod, Service and Gateway (whether
    /// added live or declared at `up`).
    pub fn remove_waypoint(&mut self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let label = waypoint_label(namespace, name);
        let Some(index) = self.state.components.iter().position(|c| c.label == label) else {
            return Err(ClusterError::Spec(format!("no waypoint {namespace}/{name}")));
        };
        self.stop(&label)?;
        self.state.components.remove(index);
        self.delete_pod(namespace, &format!("{name}-0"))?;
        let _ = std::fs::remove_file(
            self.options.state_dir.join("config").join(waypoint_file(namespace, name)),
        );
        // Declared at `up`: out of the objects the control plane reads.
        let path = self.options.state_dir.join("config/objects.yaml");
        let text = std::fs::read_to_string(&path).map_err(io("reading objects.yaml"))?;
        let objects = crate::spec::parse(&text, "objects.yaml")
            .map_err(|e| ClusterError::Spec(e.to_string()))?;
        let kept: Vec<Value> = objects
            .into_iter()
            .filter(|o| {
                let ours = o["metadata"]["namespace"] == namespace && o["metadata"]["name"] == name;
                let waypoint_service = o["kind"] == "Service"
                    && o["spec"]["selector"]["gateway.networking.k8s.io/gateway-name"] == name;
                !(ours && (o["kind"] == "Gateway" || waypoint_service))
            })
            .collect();
        write_yaml(&path, &kept)?;
        self.save()
    }

    /// Our binaries by name from the bin dir; anything else as given.
    fn resolve(&self, program: &str) -> String {
        let ours = ["mesh-sample", "controlplane", "ztunnel", "mesh-cni", "waypoint"];
        if ours.contains(&program) {
            self.options.bin_dir.join(program).display().to_string()
        } else {
            program.to_string()
        }
    }

    fn spawn(
        &mut self,
        netns: &str,
        binary: &str,
        args: &[&str],
        log: &str,
    ) -> Result<u32, ClusterError> {
        self.spawn_with(netns, binary, args, Vec::new(), None, log)
    }

    fn spawn_with(
        &mut self,
        netns: &str,
        binary: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
        log: &str,
    ) -> Result<u32, ClusterError> {
        let program = self.resolve(binary);
        let mut component = Component {
            label: log.to_string(),
            netns: netns.to_string(),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            cwd,
            pid: 0,
        };
        component.pid = self.spawn_component(&component, log)?;
        let pid = component.pid;
        self.state.components.push(component);
        self.save()?;
        Ok(pid)
    }

    /// Stops a component (`controlplane`, `ztunnel-<node>`, `agent-<node>`)
    /// with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, label: &str) -> Result<(), ClusterError> {
        let Some(component) = self.state.components.iter().find(|c| c.label == label) else {
            return Err(ClusterError::Spec(format!("no component {label}")));
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(component.pid).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if Instant::now() > deadline {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts a stopped component again with the same arguments (logging
    /// to `<label>-restarted.log`).
    pub fn start(&mut self, label: &str) -> Result<(), ClusterError> {
        let Some(index) = self.state.components.iter().position(|c| c.label == label) else {
            return Err(ClusterError::Spec(format!("no component {label}")));
        };
        let c = self.state.components[index].clone();
        let pid = self.spawn_component(&c, &format!("{label}-restarted"))?;
        self.state.components[index].pid = pid;
        self.save()
    }

    fn spawn_component(&mut self, c: &Component, log: &str) -> Result<u32, ClusterError> {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        self.spawn_program(&c.netns, &c.program, &args, &c.env, c.cwd.as_deref(), log)
    }

    fn spawn_program(
        &mut self,
        netns: &str,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
        cwd: Option<&Path>,
        log: &str,
    ) -> Result<u32, ClusterError> {
        let path = self.options.state_dir.join("logs").join(format!("{log}.log"));
        let out = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let err = out.try_clone().map_err(io("log file"))?;
        let mut command = Command::new("ip");
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let child = command
            .args(["netns", "exec", netns, program])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(environment_for(program).iter().copied())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {program}")))?;
        self.state.pids.push(child.id());
        self.save()?;
        Ok(child.id())
    }

    /// Deletes a pod: its processes stop, it leaves the control plane's
    /// view, its namespace is removed.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let Some(index) =
            self.state.pods.iter().position(|p| p.namespace == namespace && p.name == name)
        else {
            return Err(ClusterError::Spec(format!("no pod {namespace}/{name}")));
        };
        let pod = self.state.pods.remove(index);
        self.spec_pods.remove(&(namespace.to_string(), name.to_string()));
        let pods: Vec<Value> = self.spec_pods.values().cloned().collect();
        write_yaml(&self.options.state_dir.join("config/pods.yaml"), &pods)?;
        for pid in &pod.containers {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        delete_netns(&pod.netns);
        self.save()
    }

    /// Sets or removes a namespace label (e.g. enrolling a namespace).
    pub fn set_namespace_label(
        &mut self,
        namespace: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ClusterError> {
        let path = self.options.state_dir.join("config/objects.yaml");
        let text = std::fs::read_to_string(&path).map_err(io("reading objects.yaml"))?;
        let mut objects = crate::spec::parse(&text, "objects.yaml")
            .map_err(|e| ClusterError::Spec(e.to_string()))?;
        let Some(ns) = objects
            .iter_mut()
            .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == namespace)
        else {
            return Err(ClusterError::Spec(format!("no namespace {namespace}")));
        };
        set_label(ns, key, value);
        write_yaml(&path, &objects)
    }

    /// Replaces a pod's labels or annotations in the control plane's view
    /// (enrollment changes on a running pod), e.g. `("istio.io/dataplane-mode", Some("none"))`.
    pub fn set_pod_label(
        &mut self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ClusterError> {
        let Some(pod) = self.spec_pods.get_mut(&(namespace.to_string(), name.to_string())) else {
            return Err(ClusterError::Spec(format!("no pod {namespace}/{name}")));
        };
        set_label(pod, key, value);
        let pods: Vec<Value> = self.spec_pods.values().cloned().collect();
        write_yaml(&self.options.state_dir.join("config/pods.yaml"), &pods)
    }

    /// Adds or replaces objects (policies, namespaces...) for the control
    /// plane and agents: written as `config/<file>`.
    pub fn apply(&self, file: &str, objects: &[Value]) -> Result<(), ClusterError> {
        write_yaml(&self.options.state_dir.join("config").join(file), objects)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.down_on_drop {
            // From memory, not from state.json: the state directory may
            // already be gone (a test's temporary directory dropped first).
            down_state(&self.options.name, &self.state);
            let _ = std::fs::remove_file(self.options.state_dir.join("state.json"));
        }
    }
}

impl Cluster {
    /// Leaves the cluster running when this handle is dropped; `down`
    /// removes it later (from `state.json`).
    pub fn detach(mut self) {
        self.down_on_drop = false;
    }

    /// Whether a cluster's processes are still running (state in `state_dir`).
    pub fn is_running(state_dir: &Path) -> bool {
        Self::read_state(state_dir).is_ok_and(|s| {
            s.components.iter().any(|c| Path::new(&format!("/proc/{}", c.pid)).exists())
        })
    }

    /// Reads a running cluster's state (`meshctl local status`, `exec`).
    pub fn read_state(state_dir: &Path) -> Result<State, ClusterError> {
        let text = std::fs::read_to_string(state_dir.join("state.json"))
            .map_err(io(format!("no cluster state in {}", state_dir.display())))?;
        serde_json::from_str(&text).map_err(|e| ClusterError::Spec(format!("state.json: {e}")))
    }
}

/// Changes running pods' labels and annotations in a cluster's store (the
/// control plane and node agents see it at their next read): each given
/// Pod must exist; its labels and annotations replace the current ones,
/// keeping the namespace annotation the cluster set. Returns how many pods
/// changed.
pub fn relabel_pods(state_dir: &Path, pods: &[Value]) -> Result<usize, ClusterError> {
    let path = state_dir.join("config/pods.yaml");
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    let mut current =
        crate::spec::parse(&text, "pods.yaml").map_err(|e| ClusterError::Spec(e.to_string()))?;
    for pod in pods {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let Some(target) = current
            .iter_mut()
            .find(|p| p["metadata"]["name"] == name && p["metadata"]["namespace"] == namespace)
        else {
            return Err(ClusterError::Spec(format!(
                "pod {namespace}/{name} does not exist; new pods are created by `local up`"
            )));
        };
        target["metadata"]["labels"] = pod["metadata"]["labels"].clone();
        let netns = target["metadata"]["annotations"]["mesh.dev/netns"].clone();
        let mut annotations = pod["metadata"]["annotations"].clone();
        if !annotations.is_object() {
            annotations = json!({});
        }
        annotations["mesh.dev/netns"] = netns;
        target["metadata"]["annotations"] = annotations;
    }
    write_yaml(&path, &current)?;
    Ok(pods.len())
}

/// Stops every process and removes every namespace of cluster `name`
/// (from `state.json`, and by name prefix for whatever a crash left),
/// then the state directory's runtime files.
pub fn down(name: &str, state_dir: &Path) {
    let state: State = std::fs::read_to_string(state_dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    down_state(name, &state);
    let _ = std::fs::remove_file(state_dir.join("state.json"));
}

/// Stops the processes and removes the namespaces `state` lists, and any
/// namespace named `ml-<name>-*`.
fn down_state(name: &str, state: &State) {
    let pids: Vec<nix::unistd::Pid> = state
        .pids
        .iter()
        .chain(state.components.iter().map(|c| &c.pid))
        .filter_map(|p| i32::try_from(*p).ok())
        .map(nix::unistd::Pid::from_raw)
        .collect();
    for pid in &pids {
        let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
    }
    // Reap our own children so they do not linger as zombies.
    for pid in &pids {
        let _ = nix::sys::wait::waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
    let mut names: Vec<String> = state.netns.iter().rev().cloned().collect();
    names.extend(netns_with_prefix(&format!("ml-{name}-")));
    for ns in names {
        delete_netns(&ns);
    }
}

fn alive(pid: nix::unistd::Pid) -> bool {
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    nix::sys::signal::kill(pid, None).is_ok()
}

/// Turns IPv4 forwarding on in a namespace (writes its own
/// `/proc/sys/net`, which follows the opening thread's namespace).
fn enable_forwarding(netns: &str) -> Result<(), ClusterError> {
    crate::net::in_netns(netns, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
        .map_err(io(format!("enabling forwarding in {netns}")))
}

fn wait(
    what: &str,
    log: &str,
    limit: Duration,
    ready: impl Fn() -> bool,
) -> Result<(), ClusterError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ClusterError::NotReady { what: what.into(), seconds: limit.as_secs(), log: log.into() })
}

fn running_pod(object: &Value, info: &PodInfo, node: &NodeInfo) -> Value {
    let mut pod = object.clone();
    pod["spec"]["nodeName"] = json!(info.node);
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"]["mesh.dev/netns"] =
        json!(format!("/var/run/netns/{}", info.netns));
    pod["status"] = json!({
        "phase": "Running",
        "podIP": info.ip.to_string(),
        "podIPs": [{"ip": info.ip.to_string()}],
        "hostIP": node.ip.to_string(),
        "conditions": [{"type": "Ready", "status": "True"}],
    });
    pod
}

/// The component label of a waypoint (`waypoint-<namespace>-<gateway>`),
/// for `stop`/`start` and its log file.
pub fn waypoint_label(namespace: &str, gateway: &str) -> String {
    format!("waypoint-{namespace}-{gateway}")
}

/// The config file a live waypoint's Gateway and Service are written to.
fn waypoint_file(namespace: &str, gateway: &str) -> String {
    format!("waypoint-{namespace}-{gateway}.yaml")
}

/// Writes a file only root can read (bootstrap tokens).
fn write_secret(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

/// Sets (`Some`) or removes (`None`) one label of a Kubernetes object.
fn set_label(object: &mut Value, key: &str, value: Option<&str>) {
    let metadata = &mut object["metadata"];
    match value {
        Some(v) => {
            if !metadata["labels"].is_object() {
                metadata["labels"] = json!({});
            }
            metadata["labels"][key] = json!(v);
        }
        None => {
            if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
                labels.remove(key);
            }
        }
    }
}

fn write_yaml(path: &Path, objects: &[Value]) -> Result<(), ClusterError> {
    // JSON is YAML: one document per object. Written then renamed, so a
    // reader never sees half a file.
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text.join("\n---\n") + "\n")
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_set_replaced_and_removed() {
        let mut pod = json!({"metadata": {"name": "p"}});
        set_label(&mut pod, "app", Some("web"));
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web"}));
        set_label(&mut pod, "istio.io/dataplane-mode", Some("none"));
        set_label(&mut pod, "app", Some("api"));
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "api", "istio.io/dataplane-mode": "none"})
        );
        set_label(&mut pod, "app", None);
        assert_eq!(pod["metadata"]["labels"], json!({"istio.io/dataplane-mode": "none"}));
        let mut bare = json!({"metadata": {}});
        set_label(&mut bare, "app", None);
        assert_eq!(bare["metadata"].get("labels"), None, "removing from nothing adds nothing");
    }

    #[test]
    fn node_ztunnels_parse_with_their_flavour_and_unknown_nodes_are_refused() {
        let z: NodeZtunnel = "/opt/istio/ztunnel:istio".parse().unwrap();
        assert_eq!((z.program.to_str(), z.flavour), (Some("/opt/istio/ztunnel"), Flavour::Istio));
        let z: NodeZtunnel = "/tmp/ztunnel-old".parse().unwrap();
        assert_eq!(z.flavour, Flavour::Ours);
        assert!(":istio".parse::<NodeZtunnel>().is_err());
        let spec = ClusterSpec { nodes: vec!["node-a".into()], ..ClusterSpec::default() };
        let options = Options {
            name: "never-built".into(),
            state_dir: std::env::temp_dir().join("localmesh-never-built"),
            bin_dir: PathBuf::new(),
            ztunnels: [("node-z".to_string(), z)].into(),
            agent_env: Vec::new(),
            waypoint_env: Vec::new(),
        };
        let Err(ClusterError::Spec(message)) = Cluster::up(&spec, options) else {
            panic!("an unknown node must be refused before anything is built");
        };
        assert!(message.contains("node node-z") && message.contains("node-a"), "{message}");
    }
}
