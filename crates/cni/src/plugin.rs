//! The chained CNI plugin (CNI spec 1.0): run by the container runtime after
//! the network plugin, it tells the agent about the new pod and passes the
//! previous plugin's result through. An enrolled pod whose capture fails
//! does not start: the plugin returns an error and the runtime retries.
//!
//! The decision is a pure function of the environment, the stdin
//! configuration and the agent's answer ([`run`]), tested without a runtime.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// CNI versions we accept.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Where the agent listens for plugin requests by default.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/mesh-cni/plugin.sock";

/// CNI error codes (spec: 1–99 reserved, 100+ plugin-specific).
mod code {
    pub(super) const INCOMPATIBLE_VERSION: u32 = 1;
    pub(super) const BAD_CONFIG: u32 = 7;
    pub(super) const BAD_ENV: u32 = 4;
    pub(super) const CAPTURE_FAILED: u32 = 100;
    pub(super) const AGENT_UNREACHABLE: u32 = 101;
}

/// The plugin's stdin configuration (the fields we read).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: String,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    agent_socket: Option<String>,
    #[serde(default = "default_excluded")]
    exclude_namespaces: Vec<String>,
}

fn default_excluded() -> Vec<String> {
    vec!["kube-system".into()]
}

/// What the plugin asks the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRequest {
    /// `ADD`, `DEL` or `CHECK`.
    pub command: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// The pod's network namespace path.
    pub netns: String,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginReply {
    /// Whether the pod is (to be) captured.
    pub captured: bool,
    /// Why capture failed, for an enrolled pod.
    pub error: Option<String>,
}

/// What the runtime gave the plugin in its environment.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_ARGS` (`K=V;K=V`).
    pub args: Option<String>,
}

/// What to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// stdout.
    pub stdout: String,
    /// Exit status.
    pub code: i32,
}

/// Runs one plugin invocation; `ask` reaches the agent.
pub fn run(
    env: &PluginEnv,
    stdin: &str,
    ask: impl FnOnce(&Path, &PluginRequest) -> Result<PluginReply, String>,
) -> Outcome {
    let command = env.command.as_deref().unwrap_or("");
    if command == "VERSION" {
        let out = json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS});
        return Outcome { stdout: out.to_string(), code: 0 };
    }
    let conf: NetConf = match serde_json::from_str(stdin) {
        Ok(c) => c,
        Err(e) => {
            return error(
                "1.0.0",
                code::BAD_CONFIG,
                "invalid network configuration on stdin",
                &e.to_string(),
            );
        }
    };
    let version = conf.cni_version.clone();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return error(&version, code::INCOMPATIBLE_VERSION, "unsupported cniVersion", &version);
    }
    let args = parse_args(env.args.as_deref().unwrap_or(""));
    let (Some(name), Some(namespace)) = (args.get("K8S_POD_NAME"), args.get("K8S_POD_NAMESPACE"))
    else {
        // Not a Kubernetes pod (or an old runtime): nothing of ours to do.
        return pass_through(command, &conf);
    };
    if conf.exclude_namespaces.iter().any(|n| n == namespace) {
        return pass_through(command, &conf);
    }
    let request = PluginRequest {
        command: command.to_string(),
        pod_name: name.clone(),
        pod_namespace: namespace.clone(),
        netns: env.netns.clone().unwrap_or_default(),
    };
    let socket = conf.agent_socket.clone().unwrap_or_else(|| DEFAULT_AGENT_SOCKET.into());
    match command {
        "ADD" | "CHECK" => {
            if command == "ADD" && conf.prev_result.is_none() {
                return error(
                    &version,
                    code::BAD_CONFIG,
                    "mesh-cni is a chained plugin: no prevResult",
                    "",
                );
            }
            if request.netns.is_empty() {
                return error(&version, code::BAD_ENV, "CNI_NETNS is not set", "");
            }
            match ask(Path::new(&socket), &request) {
                Ok(PluginReply { error: Some(reason), .. }) => error(
                    &version,
                    code::CAPTURE_FAILED,
                    &format!(
                        "pod {namespace}/{name} is enrolled in the mesh but could not be captured"
                    ),
                    &reason,
                ),
                Ok(_) => pass_through(command, &conf),
                Err(reason) => error(
                    &version,
                    code::AGENT_UNREACHABLE,
                    "the mesh node agent is unreachable; refusing to start a pod that may need capture",
                    &reason,
                ),
            }
        }
        "DEL" => {
            // Best effort: the pod is going away whatever the agent says.
            let _ = ask(Path::new(&socket), &request);
            Outcome { stdout: String::new(), code: 0 }
        }
        other => error(&version, code::BAD_ENV, "unknown CNI_COMMAND", other),
    }
}

fn pass_through(command: &str, conf: &NetConf) -> Outcome {
    let stdout = match (command, &conf.prev_result) {
        ("ADD", Some(prev)) => prev.to_string(),
        _ => String::new(),
    };
    Outcome { stdout, code: 0 }
}

fn error(version: &str, code: u32, msg: &str, details: &str) -> Outcome {
    let out = json!({"cniVersion": version, "code": code, "msg": msg, "details": details});
    Outcome { stdout: out.to_string(), code: 1 }
}

fn parse_args(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Asks the agent over its unix socket: one JSON line each way.
pub fn ask_agent(socket: &Path, request: &PluginRequest) -> Result<PluginReply, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let timeout = Some(Duration::from_secs(20));
    stream.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    stream.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| format!("unreadable agent reply: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"k8s","type":"mesh-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24"}]}}"#;

    fn env(command: &str, ns: &str) -> PluginEnv {
        PluginEnv {
            command: Some(command.into()),
            netns: Some("/var/run/netns/x".into()),
            args: Some(format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=web")),
        }
    }

    fn parsed(o: &Outcome) -> Value {
        serde_json::from_str(&o.stdout).unwrap()
    }

    #[test]
    fn version_lists_what_we_speak() {
        let o = run(&env("VERSION", "apps"), "", |_, _| unreachable!());
        assert_eq!(o.code, 0);
        assert_eq!(parsed(&o)["supportedVersions"][2], "1.0.0");
    }

    #[test]
    fn add_passes_the_previous_result_through_when_the_agent_agrees() {
        let mut asked = None;
        let o = run(&env("ADD", "apps"), CONF, |socket, r| {
            asked = Some((socket.to_path_buf(), r.clone()));
            Ok(PluginReply { captured: true, error: None })
        });
        assert_eq!(o.code, 0);
        assert_eq!(parsed(&o)["ips"][0]["address"], "10.1.0.5/24");
        let (socket, request) = asked.unwrap();
        assert_eq!(socket, Path::new(DEFAULT_AGENT_SOCKET));
        assert_eq!((request.pod_namespace.as_str(), request.pod_name.as_str()), ("apps", "web"));
        assert_eq!(request.netns, "/var/run/netns/x");
    }

    #[test]
    fn an_enrolled_pod_that_cannot_be_captured_does_not_start() {
        let o = run(&env("ADD", "apps"), CONF, |_, _| {
            Ok(PluginReply { captured: false, error: Some("iptables-restore failed".into()) })
        });
        assert_eq!(o.code, 1);
        let e = parsed(&o);
        assert_eq!(e["code"], 100);
        assert!(e["msg"].as_str().unwrap().contains("apps/web"));
        assert_eq!(e["details"], "iptables-restore failed");

        let o = run(&env("ADD", "apps"), CONF, |_, _| Err("connection refused".into()));
        assert_eq!((o.code, parsed(&o)["code"].as_u64()), (1, Some(101)));
    }

    #[test]
    fn excluded_namespaces_and_deletes_never_fail() {
        let o = run(&env("ADD", "kube-system"), CONF, |_, _| unreachable!());
        assert_eq!(o.code, 0);
        let o = run(&env("DEL", "apps"), CONF, |_, _| Err("agent down".into()));
        assert_eq!(o, Outcome { stdout: String::new(), code: 0 });
    }

    #[test]
    fn bad_input_is_named() {
        let o = run(&env("ADD", "apps"), "{not json", |_, _| unreachable!());
        assert_eq!((o.code, parsed(&o)["code"].as_u64()), (1, Some(7)));
        let o = run(&env("ADD", "apps"), r#"{"cniVersion":"9.9.9"}"#, |_, _| unreachable!());
        assert_eq!(parsed(&o)["code"], 1);
        let o = run(&env("ADD", "apps"), r#"{"cniVersion":"1.0.0"}"#, |_, _| unreachable!());
        assert!(parsed(&o)["msg"].as_str().unwrap().contains("prevResult"));
        let o = run(&env("FROB", "apps"), CONF, |_, _| unreachable!());
        assert_eq!(parsed(&o)["code"], 4);
    }
}
