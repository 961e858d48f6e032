//! `meshctl local up|down|status|exec|apply`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::Subcommand;
use localmesh::{Cluster, ClusterSpec, Options};

/// Where local clusters keep their state.
pub(crate) fn state_dir(name: &str) -> PathBuf {
    PathBuf::from("/var/run/mesh-local").join(name)
}

#[derive(Debug, Subcommand)]
pub(crate) enum LocalCommand {
    /// Builds a cluster from a directory (or file) of Kubernetes YAML and
    /// leaves it running.
    Up {
        /// The YAML.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The cluster's name.
        #[arg(long, default_value = "mesh")]
        name: String,
        /// Another ztunnel on a node: `NODE=PATH`, or `NODE=PATH:istio` for
        /// a binary configured by Istio's environment (Istio's own ztunnel;
        /// docs/interop.md). Repeat for more nodes.
        #[arg(long = "ztunnel", value_name = "NODE=PATH[:istio]", value_parser = parse_node_ztunnel)]
        ztunnels: Vec<(String, localmesh::cluster::NodeZtunnel)>,
    },
    /// Removes every namespace and process of a cluster, even after a crash.
    Down {
        /// The cluster's name.
        #[arg(long, default_value = "mesh")]
        name: String,
    },
    /// Nodes, pods and mesh processes.
    Status {
        /// The cluster's name.
        #[arg(long, default_value = "mesh")]
        name: String,
    },
    /// Runs a command inside a pod's network namespace (`ns/pod` or `pod`).
    Exec {
        /// The pod.
        pod: String,
        /// The cluster's name.
        #[arg(long, default_value = "mesh")]
        name: String,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Adds or replaces objects (policies, services...) live.
    Apply {
        /// The YAML.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The cluster's name.
        #[arg(long, default_value = "mesh")]
        name: String,
    },
}

fn parse_node_ztunnel(s: &str) -> Result<(String, localmesh::cluster::NodeZtunnel), String> {
    let (node, binary) =
        s.split_once('=').ok_or_else(|| format!("{s:?}: expected NODE=PATH[:istio]"))?;
    Ok((node.to_string(), binary.parse()?))
}

pub(crate) fn run(command: LocalCommand) -> anyhow::Result<()> {
    crate::require_root("meshctl local")?;
    match command {
        LocalCommand::Up { file, name, ztunnels } => {
            if Cluster::is_running(&state_dir(&name)) {
                anyhow::bail!(
                    "cluster {name} is already running; remove it first: meshctl local down --name {name}"
                );
            }
            let spec =
                ClusterSpec::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let options = Options {
                name: name.clone(),
                state_dir: state_dir(&name),
                bin_dir: crate::bin_dir()?,
                ztunnels: ztunnels.into_iter().collect(),
                agent_env: Vec::new(),
                waypoint_env: Vec::new(),
            };
            let cluster = Cluster::up(&spec, options).context("bringing the cluster up")?;
            print_status(cluster.state());
            println!(
                "\nlogs: {}/logs   remove with: meshctl local down --name {name}",
                state_dir(&name).display()
            );
            cluster.detach();
            Ok(())
        }
        LocalCommand::Down { name } => {
            localmesh::down(&name, &state_dir(&name));
            let _ = std::fs::remove_dir_all(state_dir(&name));
            println!("cluster {name} removed");
            Ok(())
        }
        LocalCommand::Status { name } => {
            print_status(&Cluster::read_state(&state_dir(&name))?);
            Ok(())
        }
        LocalCommand::Exec { pod, name, command } => {
            let state = Cluster::read_state(&state_dir(&name))?;
            let (ns, pod_name) = pod.split_once('/').unwrap_or(("default", &pod));
            let info = state
                .pods
                .iter()
                .find(|p| p.namespace == ns && p.name == pod_name)
                .ok_or_else(|| anyhow::anyhow!("no pod {ns}/{pod_name} in cluster {name}"))?;
            let status =
                Command::new("ip").args(["netns", "exec", &info.netns]).args(&command).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LocalCommand::Apply { file, name } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let objects = localmesh::spec::parse(&text, &file.display().to_string())?;
            if let Some(o) =
                objects.iter().find(|o| matches!(o["kind"].as_str(), Some("Deployment" | "Node")))
            {
                anyhow::bail!(
                    "{} {}: deployments and nodes are fixed at `local up`; apply pods (labels, annotations), policies, services and other objects",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
            let (pods, objects): (Vec<_>, Vec<_>) =
                objects.into_iter().partition(|o| o["kind"] == "Pod");
            if !pods.is_empty() {
                let n = localmesh::cluster::relabel_pods(&state_dir(&name), &pods)?;
                println!("{n} pod(s) relabelled");
            }
            if objects.is_empty() {
                return Ok(());
            }
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("applied");
            let target = state_dir(&name).join("config").join(format!("applied-{stem}.yaml"));
            let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
            std::fs::write(&target, text.join("\n---\n") + "\n")?;
            let written = std::time::SystemTime::now();
            println!("{} object(s) written ({})", objects.len(), target.display());
            // The control plane reads the directory itself: ask it what it
            // made of the file, and fail if it refused any of it.
            let state = Cluster::read_state(&state_dir(&name))?;
            let report = localmesh::report::config_report(
                &state,
                written,
                std::time::Duration::from_secs(15),
            )?;
            for (kind, count) in &report.ignored_kinds {
                println!("ignored by the mesh (a kind it does not handle): {kind} × {count}");
            }
            let target = target.display().to_string();
            let refused: Vec<_> = report.refused_from(&target).collect();
            for object in &refused {
                eprintln!("refused: {object}");
            }
            if !refused.is_empty() {
                anyhow::bail!(
                    "{} object(s) of {} refused by the control plane",
                    refused.len(),
                    file.display()
                );
            }
            println!("applied: the control plane read every object");
            Ok(())
        }
    }
}

fn print_status(state: &localmesh::State) {
    println!("NODE        ADDRESS       POD CIDR");
    for n in &state.nodes {
        println!("{:<11} {:<13} {}", n.name, n.ip, n.pod_cidr);
    }
    println!("\nPOD                              NODE        ADDRESS");
    for p in &state.pods {
        println!("{:<32} {:<11} {}", format!("{}/{}", p.namespace, p.name), p.node, p.ip);
    }
    println!("\nCOMPONENT            PID      RUNNING");
    for c in &state.components {
        let running = std::path::Path::new(&format!("/proc/{}", c.pid)).exists();
        println!("{:<20} {:<8} {}", c.label, c.pid, if running { "yes" } else { "no" });
    }
}
