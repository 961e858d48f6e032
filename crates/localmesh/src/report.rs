//! What the control plane made of the cluster's config files, asked of its
//! debug endpoint (`/debug/config`) once it has read a change: the objects
//! it refused (and what is enforced in their place) and the kinds it does
//! not handle. `meshctl local apply` prints it and fails when an object of
//! the applied file was refused.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::cluster::{CONTROL_PLANE_IP, ClusterError, State};

/// The control plane's debug port in the fabric.
const ADMIN_PORT: u16 = 15014;

/// The control plane's view of its config, at one load.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigReport {
    /// When the control plane read its directory (ms since the epoch).
    #[serde(default)]
    pub read_at_unix_ms: Option<u64>,
    /// Objects refused.
    #[serde(default)]
    pub rejected: Vec<RefusedObject>,
    /// `apiVersion kind` of objects the mesh does not handle, with a count.
    #[serde(default)]
    pub ignored_kinds: BTreeMap<String, u64>,
}

/// One refused object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RefusedObject {
    /// File and document.
    pub source: String,
    /// Kind, namespace and name, when they could be read.
    pub object: Option<String>,
    /// What was wrong.
    pub reason: String,
    /// What is enforced in its place (empty: nothing).
    #[serde(default)]
    pub in_force: String,
}

impl ConfigReport {
    /// The refused objects that came from `file` (a path in the cluster's
    /// config directory).
    pub fn refused_from<'a>(&'a self, file: &'a str) -> impl Iterator<Item = &'a RefusedObject> {
        self.rejected.iter().filter(move |r| {
            r.source.strip_prefix(file).is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    }
}

impl std::fmt::Display for RefusedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.object {
            Some(o) => write!(f, "{o} ({}): {}", self.source, self.reason)?,
            None => write!(f, "{}: {}", self.source, self.reason)?,
        }
        if !self.in_force.is_empty() {
            write!(f, "; {}", self.in_force)?;
        }
        Ok(())
    }
}

/// Waits (up to `timeout`) until the control plane has read its config at
/// or after `since`, and returns what it made of it.
pub fn config_report(
    state: &State,
    since: SystemTime,
    timeout: Duration,
) -> Result<ConfigReport, ClusterError> {
    let fabric = state
        .components
        .iter()
        .find(|c| c.label == "controlplane")
        .map(|c| c.netns.clone())
        .ok_or_else(|| ClusterError::Spec("the cluster has no control plane".into()))?;
    let since_ms = since.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let admin = SocketAddr::new(IpAddr::V4(CONTROL_PLANE_IP), ADMIN_PORT);
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no answer yet");
    while Instant::now() < deadline {
        match crate::net::http_get(&fabric, admin, "/debug/config") {
            Ok((200, body)) => match serde_json::from_str::<ConfigReport>(&body) {
                Ok(report) if report.read_at_unix_ms.is_some_and(|t| t >= since_ms) => {
                    return Ok(report);
                }
                Ok(_) => last_error = "the change has not been read yet".into(),
                Err(e) => last_error = format!("/debug/config is not the expected JSON: {e}"),
            },
            Ok((status, body)) => last_error = format!("/debug/config answered {status}: {body}"),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ClusterError::Spec(format!(
        "the control plane did not report reading the change within {} s ({last_error})",
        timeout.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_objects_are_matched_to_their_file() {
        let report: ConfigReport = serde_json::from_str(
            r#"{"read_at_unix_ms": 5, "rejected": [
                {"source": "/c/applied-p.yaml (document 2)", "object": "AuthorizationPolicy a/p", "reason": "invalid: spec.action: unknown variant", "in_force": "denied"},
                {"source": "/c/applied-p.yaml.bak (document 1)", "object": null, "reason": "x"},
                {"source": "/c/other.yaml (document 1)", "object": null, "reason": "y"}],
               "ignored_kinds": {"gateway.networking.k8s.io/v1 HTTPRoute": 2}}"#,
        )
        .unwrap();
        let refused: Vec<String> =
            report.refused_from("/c/applied-p.yaml").map(ToString::to_string).collect();
        assert_eq!(
            refused,
            [
                "AuthorizationPolicy a/p (/c/applied-p.yaml (document 2)): invalid: spec.action: unknown variant; denied"
            ]
        );
        assert_eq!(report.ignored_kinds["gateway.networking.k8s.io/v1 HTTPRoute"], 2);
    }
}
