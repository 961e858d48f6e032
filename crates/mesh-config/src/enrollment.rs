//! Which pods the mesh captures, and how.

use std::collections::BTreeMap;

/// Namespace or pod label enrolling into ambient mode.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Namespace label selecting sidecar injection.
pub const INJECTION: &str = "istio-injection";
/// Pod label or annotation selecting sidecar injection.
pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
/// Label binding a namespace, service or pod to a waypoint.
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";

/// How a pod takes part in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Captured by its node's ztunnel.
    Ambient,
    /// Has a sidecar (which speaks HBONE itself).
    Sidecar,
    /// Not in the mesh.
    None,
}

/// Decides a pod's mode from its labels, annotations and its namespace's
/// labels. Sidecar injection wins over ambient; a pod's
/// `istio.io/dataplane-mode=none` opts it out of ambient.
pub fn mode(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
) -> Mode {
    let pod_sidecar =
        pod_labels.get(SIDECAR_INJECT).or_else(|| pod_annotations.get(SIDECAR_INJECT));
    let sidecar = match pod_sidecar.map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => namespace_labels.get(INJECTION).is_some_and(|v| v == "enabled"),
    };
    if sidecar {
        return Mode::Sidecar;
    }
    match pod_labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some("none") => Mode::None,
        Some("ambient") => Mode::Ambient,
        _ if namespace_labels.get(DATAPLANE_MODE).is_some_and(|v| v == "ambient") => Mode::Ambient,
        _ => Mode::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn table() {
        let none = labels(&[]);
        let ambient_ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let sidecar_ns = labels(&[(INJECTION, "enabled")]);
        let both_ns = labels(&[(DATAPLANE_MODE, "ambient"), (INJECTION, "enabled")]);
        let cases = [
            ("plain namespace", &none, labels(&[]), labels(&[]), Mode::None),
            ("ambient namespace", &ambient_ns, labels(&[]), labels(&[]), Mode::Ambient),
            (
                "pod opts out",
                &ambient_ns,
                labels(&[(DATAPLANE_MODE, "none")]),
                labels(&[]),
                Mode::None,
            ),
            (
                "pod opts in",
                &none,
                labels(&[(DATAPLANE_MODE, "ambient")]),
                labels(&[]),
                Mode::Ambient,
            ),
            ("sidecar namespace", &sidecar_ns, labels(&[]), labels(&[]), Mode::Sidecar),
            ("sidecar wins over ambient", &both_ns, labels(&[]), labels(&[]), Mode::Sidecar),
            (
                "pod sidecar label wins",
                &ambient_ns,
                labels(&[(SIDECAR_INJECT, "true")]),
                labels(&[]),
                Mode::Sidecar,
            ),
            (
                "pod sidecar annotation wins",
                &ambient_ns,
                labels(&[]),
                labels(&[(SIDECAR_INJECT, "true")]),
                Mode::Sidecar,
            ),
            (
                "pod declines injection in sidecar namespace",
                &both_ns,
                labels(&[(SIDECAR_INJECT, "false")]),
                labels(&[]),
                Mode::Ambient,
            ),
        ];
        for (name, ns, pod, annotations, expected) in cases {
            assert_eq!(mode(ns, &pod, &annotations), expected, "{name}");
        }
    }
}
