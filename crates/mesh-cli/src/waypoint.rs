//! `meshctl waypoint apply|list|delete`: waypoints in a local cluster, as
//! `istioctl waypoint` manages them in Kubernetes.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use localmesh::{Cluster, Options};

/// What a waypoint takes (`istio.io/waypoint-for`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum For {
    Service,
    Workload,
    All,
    None,
}

impl For {
    fn label(self) -> &'static str {
        match self {
            For::Service => "service",
            For::Workload => "workload",
            For::All => "all",
            For::None => "none",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum WaypointCommand {
    /// Deploys a waypoint (an `istio-waypoint` Gateway, its pod and Service).
    Apply {
        /// The namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The waypoint's (Gateway's) name.
        #[arg(long, default_value = "waypoint")]
        name: String,
        /// What traffic it takes [default: service].
        #[arg(long = "for", value_enum)]
        waypoint_for: Option<For>,
        /// Also bind the namespace to it (`istio.io/use-waypoint`).
        #[arg(long)]
        enroll_namespace: bool,
        /// The local cluster.
        #[arg(long, default_value = "mesh")]
        cluster: String,
    },
    /// Lists waypoints and whether they are ready.
    List {
        /// Only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The local cluster.
        #[arg(long, default_value = "mesh")]
        cluster: String,
    },
    /// Removes a waypoint. Traffic bound to a waypoint that no longer
    /// exists is refused (fail closed, unlike Istio, which sends it direct),
    /// with a warning; set `istio.io/use-waypoint: none` on the bindings
    /// first to send it direct instead.
    Delete {
        /// The waypoint's name.
        name: String,
        /// The namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The local cluster.
        #[arg(long, default_value = "mesh")]
        cluster: String,
    },
}

fn reopen(cluster: &str) -> anyhow::Result<Cluster> {
    let options = Options {
        name: cluster.to_string(),
        state_dir: crate::local::state_dir(cluster),
        bin_dir: crate::bin_dir()?,
        ztunnels: Default::default(),
        agent_env: Vec::new(),
        waypoint_env: Vec::new(),
    };
    Cluster::reopen(options).with_context(|| format!("opening local cluster {cluster} (is it up?)"))
}

pub(crate) fn run(command: WaypointCommand) -> anyhow::Result<()> {
    crate::require_root("meshctl waypoint (local cluster)")?;
    match command {
        WaypointCommand::Apply { namespace, name, waypoint_for, enroll_namespace, cluster } => {
            let mut c = reopen(&cluster)?;
            c.add_waypoint(&namespace, &name, waypoint_for.map(For::label))
                .with_context(|| format!("deploying waypoint {namespace}/{name}"))?;
            println!("waypoint {namespace}/{name} applied");
            if enroll_namespace {
                c.set_namespace_label(&namespace, "istio.io/use-waypoint", Some(&name))?;
                println!("namespace {namespace} labelled istio.io/use-waypoint={name}");
            }
            Ok(())
        }
        WaypointCommand::List { namespace, cluster } => {
            let state = Cluster::read_state(&crate::local::state_dir(&cluster))?;
            println!("NAMESPACE        NAME             ADDRESS        READY");
            for c in state.components.iter().filter(|c| c.label.starts_with("waypoint-")) {
                let arg = |flag: &str| {
                    c.args
                        .iter()
                        .position(|a| a == flag)
                        .and_then(|i| c.args.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                let (ns, name, address) = (arg("--namespace"), arg("--name"), arg("--instance-ip"));
                if namespace.as_ref().is_some_and(|n| *n != ns) {
                    continue;
                }
                let ready = address.parse().ok().is_some_and(|ip| {
                    localmesh::net::http_get(
                        &c.netns,
                        std::net::SocketAddr::new(ip, 15021),
                        "/healthz/ready",
                    )
                    .is_ok_and(|(status, _)| status == 200)
                });
                println!("{ns:<16} {name:<16} {address:<14} {}", if ready { "yes" } else { "no" });
            }
            Ok(())
        }
        WaypointCommand::Delete { name, namespace, cluster } => {
            let mut c = reopen(&cluster)?;
            c.remove_waypoint(&namespace, &name)
                .with_context(|| format!("removing waypoint {namespace}/{name}"))?;
            println!("waypoint {namespace}/{name} deleted");
            Ok(())
        }
    }
}
