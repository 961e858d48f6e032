//! Putting the chained plugin on a node, as Istio's install-cni does: the
//! plugin binary copied into the host's CNI bin directory, and our entry
//! chained into the node's network configuration; both taken out again on
//! uninstall.
//!
//! - The network configuration is the one the runtime uses: the first file
//!   by name in the conf directory ending in `.conflist`, `.conf` or
//!   `.json` (libcni's order). A `.conflist` gets our entry appended to its
//!   `plugins`; a single-plugin `.conf` is turned into a `.conflist` holding
//!   it and ours (the `.conf` is removed, as Istio does).
//! - Installing twice leaves one entry, refreshed. Uninstalling removes
//!   only our entry (a list left with the network plugin alone stays a
//!   list) and our binary.
//! - Every file is written beside its destination and renamed over it: a
//!   runtime reading the directory never sees half a file or half a binary.
//!
//! No network configuration yet (the network plugin's own installer has not
//! run) is an error of its own, so the caller can wait for one.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The plugin's `type` in the configuration, and its binary's name.
pub const PLUGIN_TYPE: &str = "mesh-cni";

/// Where and what to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The plugin binary to copy (ours: `mesh-cni` itself).
    pub plugin_binary: PathBuf,
    /// The host's CNI bin directory (`/opt/cni/bin`; k3s and others differ:
    /// `docs/node-agent.md`).
    pub bin_dir: PathBuf,
    /// The host's CNI configuration directory (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The agent's socket, written into our entry.
    pub agent_socket: String,
    /// Namespaces the plugin never captures.
    pub exclude_namespaces: Vec<String>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No network configuration to chain into (yet).
    #[error("no CNI network configuration in {0} yet (*.conflist, *.conf, *.json)")]
    NoNetworkConfig(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The network configuration does not read as one.
    #[error("{path}: {reason}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_path_buf(), source }
}

/// The configuration the runtime uses: the first by name.
pub fn network_config(conf_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(conf_dir)(e)),
    };
    let mut configs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.')
                && [".conflist", ".conf", ".json"].iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    configs.sort();
    Ok(configs.into_iter().next())
}

/// Writes `contents` to `path` through a temporary file beside it.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), InstallError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.mesh-tmp"));
    std::fs::write(&temp, contents).map_err(io_error(&temp))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))
}

fn read_config(path: &Path) -> Result<Value, InstallError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| InstallError::BadConfig {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })?;
    if !value.is_object() {
        return Err(InstallError::BadConfig {
            path: path.to_path_buf(),
            reason: "not a JSON object".into(),
        });
    }
    Ok(value)
}

/// The configuration's text; never an empty file in its place.
fn to_json(value: &Value, path: &Path) -> Result<Vec<u8>, InstallError> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| InstallError::BadConfig { path: path.to_path_buf(), reason: e.to_string() })
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// Copies the binary and chains our entry; returns the configuration file
/// written.
pub fn install(options: &InstallOptions) -> Result<PathBuf, InstallError> {
    let binary = std::fs::read(&options.plugin_binary).map_err(io_error(&options.plugin_binary))?;
    std::fs::create_dir_all(&options.bin_dir).map_err(io_error(&options.bin_dir))?;
    write_atomically(&options.bin_dir.join(PLUGIN_TYPE), &binary, 0o755)?;

    let Some(path) = network_config(&options.conf_dir)? else {
        return Err(InstallError::NoNetworkConfig(options.conf_dir.clone()));
    };
    let mut config = read_config(&path)?;
    let is_list = config.get("plugins").is_some();
    let (mut list, target) = if is_list {
        (config.take(), path.clone())
    } else {
        // A single plugin: a list holding it, under its name and version.
        let name = config.get("name").cloned().unwrap_or(json!("k8s-pod-network"));
        let version = config.get("cniVersion").cloned().unwrap_or(json!("1.0.0"));
        let list = json!({"cniVersion": version, "name": name, "plugins": [config]});
        (list, path.with_extension("conflist"))
    };
    let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) else {
        return Err(InstallError::BadConfig { path, reason: "`plugins` is not a list".into() });
    };
    plugins.retain(|p| !is_ours(p));
    plugins.push(json!({
        "type": PLUGIN_TYPE,
        "agentSocket": options.agent_socket,
        "excludeNamespaces": options.exclude_namespaces,
    }));
    write_atomically(&target, &to_json(&list, &target)?, 0o644)?;
    if target != path {
        std::fs::remove_file(&path).map_err(io_error(&path))?;
    }
    Ok(target)
}

/// Takes our entry out of the network configuration and our binary out of
/// the bin directory; what is not there is not an error.
pub fn uninstall(options: &InstallOptions) -> Result<(), InstallError> {
    if let Some(path) = network_config(&options.conf_dir)? {
        let mut config = read_config(&path)?;
        if let Some(plugins) = config.get_mut("plugins").and_then(Value::as_array_mut) {
            let before = plugins.len();
            plugins.retain(|p| !is_ours(p));
            if plugins.len() != before {
                write_atomically(&path, &to_json(&config, &path)?, 0o644)?;
            }
        }
    }
    let binary = options.bin_dir.join(PLUGIN_TYPE);
    match std::fs::remove_file(&binary) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(&binary)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Tree {
        root: PathBuf,
        options: InstallOptions,
    }

    impl Tree {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("mesh-cni-install-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("net.d")).unwrap();
            std::fs::write(root.join("mesh-cni-binary"), b"\x7fELF plugin").unwrap();
            let options = InstallOptions {
                plugin_binary: root.join("mesh-cni-binary"),
                bin_dir: root.join("bin"),
                conf_dir: root.join("net.d"),
                agent_socket: "/var/run/mesh-cni/plugin.sock".into(),
                exclude_namespaces: vec!["kube-system".into()],
            };
            Self { root, options }
        }

        fn conf(&self, name: &str, value: &Value) {
            std::fs::write(self.root.join("net.d").join(name), value.to_string()).unwrap();
        }

        fn read(&self, name: &str) -> Value {
            serde_json::from_str(
                &std::fs::read_to_string(self.root.join("net.d").join(name)).unwrap(),
            )
            .unwrap()
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.root.join("net.d"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn flannel_list() -> Value {
        json!({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
            {"type": "flannel", "delegate": {"isDefaultGateway": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]})
    }

    #[test]
    fn a_list_gets_our_entry_once_and_loses_only_ours() {
        let t = Tree::new("list");
        t.conf("10-flannel.conflist", &flannel_list());
        t.conf("99-other.conflist", &flannel_list());
        let written = install(&t.options).unwrap();
        assert!(written.ends_with("10-flannel.conflist"), "the first by name: {written:?}");
        install(&t.options).unwrap();
        let list = t.read("10-flannel.conflist");
        let types: Vec<&str> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["flannel", "portmap", "mesh-cni"], "once, last");
        assert_eq!(list["plugins"][2]["agentSocket"], "/var/run/mesh-cni/plugin.sock");
        assert_eq!(t.read("99-other.conflist"), flannel_list(), "other files untouched");
        let binary = t.options.bin_dir.join("mesh-cni");
        assert_eq!(std::fs::read(&binary).unwrap(), b"\x7fELF plugin");
        assert_eq!(std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(!t.files().iter().any(|f| f.contains("mesh-tmp")), "no temporary file left");

        uninstall(&t.options).unwrap();
        assert_eq!(t.read("10-flannel.conflist"), flannel_list(), "back as it was");
        assert!(!binary.exists());
        uninstall(&t.options).unwrap();
    }

    #[test]
    fn a_single_plugin_becomes_a_list() {
        let t = Tree::new("single");
        t.conf(
            "10-bridge.conf",
            &json!({"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0"}),
        );
        let written = install(&t.options).unwrap();
        assert_eq!(t.files(), ["10-bridge.conflist"]);
        assert!(written.ends_with("10-bridge.conflist"));
        let list = t.read("10-bridge.conflist");
        assert_eq!(
            (list["name"].as_str(), list["cniVersion"].as_str()),
            (Some("mynet"), Some("0.4.0"))
        );
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["plugins"][1]["type"], "mesh-cni");
        uninstall(&t.options).unwrap();
        assert_eq!(t.read("10-bridge.conflist")["plugins"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn no_or_broken_network_config_is_a_clear_error() {
        let t = Tree::new("none");
        let e = install(&t.options).unwrap_err();
        assert!(matches!(e, InstallError::NoNetworkConfig(_)), "{e}");
        assert!(e.to_string().contains("no CNI network configuration"), "{e}");
        std::fs::write(t.root.join("net.d").join(".hidden.conflist"), "{}").unwrap();
        std::fs::write(t.root.join("net.d").join("README"), "not a config").unwrap();
        assert!(matches!(install(&t.options), Err(InstallError::NoNetworkConfig(_))));
        std::fs::write(t.root.join("net.d").join("10-broken.conflist"), "{not json").unwrap();
        let e = install(&t.options).unwrap_err();
        assert!(e.to_string().contains("10-broken.conflist: not JSON"), "{e}");
        t.conf("10-broken.conflist", &json!({"name": "x", "plugins": "flannel"}));
        let e = install(&t.options).unwrap_err();
        assert!(e.to_string().contains("`plugins` is not a list"), "{e}");
        assert_eq!(t.read("10-broken.conflist")["plugins"], "flannel", "left as it was");
    }
}
