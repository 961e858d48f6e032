//! `meshctl policy explain NAMESPACE/NAME` and `meshctl policy list`: who
//! enforces each AuthorizationPolicy (ztunnel, which waypoints, or nobody)
//! and what its translation changed, as the control plane reports it on
//! its debug endpoint (and, in Kubernetes, on the object's status).

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Who enforces one AuthorizationPolicy, and what was changed or
    /// ignored in it.
    Explain {
        /// `namespace/name`.
        policy: String,
        /// The local cluster.
        #[arg(long, default_value = "mesh")]
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every AuthorizationPolicy and who enforces it.
    List {
        /// The local cluster.
        #[arg(long, default_value = "mesh")]
        name: String,
    },
}

/// The control plane's `/debug/policies`.
fn policies(cluster: &str) -> anyhow::Result<Vec<Value>> {
    crate::require_root("meshctl policy (local cluster)")?;
    let state = localmesh::Cluster::read_state(&crate::local::state_dir(cluster))?;
    let cp = state
        .components
        .iter()
        .find(|c| c.label == "controlplane")
        .ok_or_else(|| anyhow::anyhow!("cluster {cluster} has no control plane"))?;
    let addr = std::net::SocketAddr::new(localmesh::cluster::CONTROL_PLANE_IP.into(), 15014);
    let (status, body) = localmesh::net::http_get(&cp.netns, addr, "/debug/policies")
        .context("asking the control plane")?;
    if status != 200 {
        anyhow::bail!("the control plane answered {status}: {body}");
    }
    let value: Value = serde_json::from_str(&body).context("the control plane's answer")?;
    Ok(value["policies"].as_array().cloned().unwrap_or_default())
}

fn enforced_by(p: &Value) -> String {
    let by: Vec<&str> =
        p["enforcedBy"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match (p["layer"].as_str(), by.is_empty()) {
        (_, true) => "nobody".to_string(),
        (Some("waypoint"), false) => format!("waypoint {}", by.join(", waypoint ")),
        _ => by.join(", "),
    }
}

/// The text `explain` prints for one policy.
pub(crate) fn explain_text(p: &Value) -> String {
    let mut out = format!(
        "AuthorizationPolicy {}\n  enforced at: {}\n  enforced by: {}\n",
        p["policy"].as_str().unwrap_or_default(),
        p["layer"].as_str().unwrap_or_default(),
        enforced_by(p),
    );
    let notes: Vec<&str> =
        p["notes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if notes.is_empty() {
        out.push_str("  translated as written\n");
    } else {
        out.push_str("  notes:\n");
        for n in notes {
            out.push_str(&format!("    - {n}\n"));
        }
    }
    out
}

pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Explain { policy, name, json } => {
            if !policy.contains('/') {
                anyhow::bail!("say which policy as NAMESPACE/NAME, got {policy:?}");
            }
            let all = policies(&name)?;
            let Some(p) = all.iter().find(|p| p["policy"] == policy.as_str()) else {
                let known: Vec<&str> = all.iter().filter_map(|p| p["policy"].as_str()).collect();
                anyhow::bail!(
                    "no AuthorizationPolicy {policy} in cluster {name} (there are: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(p)?);
            } else {
                print!("{}", explain_text(p));
            }
        }
        PolicyCommand::List { name } => {
            println!("{:<40} {:<10} ENFORCED BY", "POLICY", "AT");
            for p in policies(&name)? {
                println!(
                    "{:<40} {:<10} {}",
                    p["policy"].as_str().unwrap_or_default(),
                    p["layer"].as_str().unwrap_or_default(),
                    enforced_by(&p)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_names_the_enforcer_or_nobody() {
        let p = serde_json::json!({
            "policy": "apps/readers", "layer": "waypoint",
            "enforcedBy": ["apps/waypoint", "apps/second"], "notes": [],
        });
        let text = explain_text(&p);
        assert!(
            text.contains("enforced by: waypoint apps/waypoint, waypoint apps/second"),
            "{text}"
        );
        assert!(text.contains("translated as written"), "{text}");
        let nobody = serde_json::json!({
            "policy": "apps/x", "layer": "waypoint", "enforcedBy": [],
            "notes": ["no waypoint enforces this policy"],
        });
        let text = explain_text(&nobody);
        assert!(text.contains("enforced by: nobody"), "{text}");
        assert!(text.contains("- no waypoint enforces this policy"), "{text}");
    }
}
