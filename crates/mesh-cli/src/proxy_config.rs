//! `meshctl proxy-config workloads|services|policies|certificates|pods|connections --node N`
//! and `meshctl proxy-config routes --waypoint NS/NAME`.

use anyhow::Context;
use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum What {
    Workloads,
    Services,
    Policies,
    Certificates,
    /// Pods the node's ztunnel serves, with their HBONE client pools.
    Pods,
    Connections,
    /// A waypoint's L7 routes (`--waypoint NS/NAME`).
    Routes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// What a node's ztunnel knows.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which part.
    what: What,
    /// The node whose ztunnel is asked.
    #[arg(long, required_unless_present = "waypoint", conflicts_with = "waypoint")]
    node: Option<String>,
    /// The waypoint asked (`namespace/name`), for `routes`, `workloads`
    /// and `services`.
    #[arg(long)]
    waypoint: Option<String>,
    /// The local cluster.
    #[arg(long, default_value = "mesh")]
    name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    crate::require_root("meshctl proxy-config (local cluster)")?;
    let state = localmesh::Cluster::read_state(&crate::local::state_dir(&args.name))?;
    let path = match args.what {
        What::Connections => "/debug/connections",
        _ => "/config_dump",
    };
    let dump = match (&args.node, &args.waypoint) {
        (Some(node_name), _) => {
            if matches!(args.what, What::Routes) {
                anyhow::bail!("routes are a waypoint's: use --waypoint NAMESPACE/NAME");
            }
            let node =
                state.nodes.iter().find(|n| &n.name == node_name).ok_or_else(|| {
                    anyhow::anyhow!("no node {node_name} in cluster {}", args.name)
                })?;
            localmesh::net::ztunnel_admin_json(&node.netns, path)
                .with_context(|| format!("asking ztunnel on {node_name}"))?
        }
        (None, Some(waypoint)) => {
            if !matches!(args.what, What::Routes | What::Workloads | What::Services) {
                anyhow::bail!("a waypoint shows routes, workloads and services");
            }
            let (namespace, name) = waypoint.split_once('/').ok_or_else(|| {
                anyhow::anyhow!("--waypoint wants NAMESPACE/NAME, got {waypoint:?}")
            })?;
            let pod = state
                .pods
                .iter()
                .find(|p| p.namespace == namespace && p.name == format!("{name}-0"))
                .ok_or_else(|| {
                    anyhow::anyhow!("no waypoint {waypoint} in cluster {}", args.name)
                })?;
            localmesh::net::ztunnel_admin_json(&pod.netns, path)
                .with_context(|| format!("asking waypoint {waypoint}"))?
        }
        (None, None) => anyhow::bail!("say which proxy: --node NODE or --waypoint NAMESPACE/NAME"),
    };
    let items = match args.what {
        What::Workloads => dump["workloads"].clone(),
        What::Services => dump["services"].clone(),
        What::Policies => dump["policies"].clone(),
        What::Certificates => dump["certificates"].clone(),
        What::Pods => dump["pods"].clone(),
        What::Connections => dump,
        What::Routes => route_rows(&dump["routes"]),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&items)?),
        Output::Table => print!("{}", table(args.what, &items)),
    }
    Ok(())
}

/// A waypoint's routes, one row per route, in the order they are tried.
fn route_rows(services: &Value) -> Value {
    let mut rows = Vec::new();
    for service in services.as_array().into_iter().flatten() {
        for route in service["routes"].as_array().into_iter().flatten() {
            rows.push(serde_json::json!({
                "service": service["service"],
                "name": route["name"],
                "match": route["match"],
                "action": route["action"].to_string(),
            }));
        }
    }
    Value::Array(rows)
}

/// Rows of the fields that matter per kind.
pub(crate) fn table(what: What, items: &Value) -> String {
    let columns: &[(&str, &str)] = match what {
        What::Workloads => &[
            ("NAMESPACE", "namespace"),
            ("NAME", "name"),
            ("ADDRESS", "addresses"),
            ("NODE", "node"),
            ("PROTOCOL", "protocol"),
            ("IDENTITY", "identity"),
            ("WAYPOINT", "waypoint"),
        ],
        What::Services => &[
            ("NAMESPACE", "namespace"),
            ("NAME", "name"),
            ("VIPS", "vips"),
            ("WAYPOINT", "waypoint"),
        ],
        What::Policies => &[
            ("NAMESPACE", "namespace"),
            ("NAME", "name"),
            ("ACTION", "action"),
            ("SCOPE", "scope"),
            ("RULES", "rules"),
        ],
        What::Certificates => &[
            ("IDENTITY", "identity"),
            ("STATE", "state"),
            ("PODS", "pods"),
            ("SERIAL", "certificate.serial"),
            ("NOT AFTER", "certificate.notAfter"),
        ],
        What::Pods => &[
            ("NAMESPACE", "namespace"),
            ("NAME", "name"),
            ("SERVICE ACCOUNT", "serviceAccount"),
            ("HBONE OPEN", "hbonePool.connectionsOpen"),
            ("HBONE OPENED", "hbonePool.connectionsOpened"),
            ("TLS RESUMED", "hbonePool.tlsSessionsResumed"),
        ],
        What::Routes => &[("SERVICE", "service"), ("ROUTE", "name"), ("ACTION", "action")],
        What::Connections => &[
            ("DIRECTION", "direction"),
            ("SOURCE", "source"),
            ("DESTINATION", "destination"),
            ("UPSTREAM", "upstream"),
            ("PROTOCOL", "protocol"),
            ("SOURCE IDENTITY", "source_identity"),
        ],
    };
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|item| columns.iter().map(|(_, path)| cell(item, path)).collect())
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

fn cell(item: &Value, path: &str) -> String {
    let mut v = item;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_the_fields_that_matter() {
        let items = serde_json::json!([
            {"namespace": "apps", "name": "web", "addresses": ["10.244.1.2"], "node": "node-a", "protocol": "HBONE", "identity": "spiffe://cluster.local/ns/apps/sa/web", "waypoint": null}
        ]);
        let out = table(What::Workloads, &items);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  NAME  ADDRESS"), "{out}");
        assert!(
            lines[1].contains("10.244.1.2")
                && lines[1].contains("HBONE")
                && lines[1].ends_with("-"),
            "{out}"
        );
    }

    #[test]
    fn pods_show_their_pools() {
        let items = serde_json::json!([
            {"namespace": "apps", "name": "sleep", "serviceAccount": "sleep",
             "hbonePool": {"connectionsOpen": 2, "connectionsOpened": 5, "tlsSessionsResumed": 3}}
        ]);
        let out = table(What::Pods, &items);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("HBONE OPEN  HBONE OPENED  TLS RESUMED"), "{out}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["apps", "sleep", "sleep", "2", "5", "3"], "{out}");
    }
}
