//! Pods become workloads and Services become services.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_core::{
    GatewayAddress, GatewayDestination, Identity, NamespacedHostname, NetworkAddress, NetworkMode,
    PortMapping, Service, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::enrollment::{self, Mode, USE_WAYPOINT};
use super::{MeshConfig, Warning};
use crate::config::{ClusterState, ObjectRef};

/// Port every waypoint takes HBONE on.
const WAYPOINT_HBONE_PORT: u16 = 15008;

/// Every Service with an address or selector, as a mesh service.
pub fn services(state: &ClusterState, mesh: &MeshConfig) -> Vec<Service> {
    let mut out = Vec::new();
    for ((namespace, name), svc) in &state.services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ips = spec.cluster_ips.clone().or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]));
        let vips = ips
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|address| NetworkAddress { network: String::new(), address })
            .collect();
        // Named target ports: each workload resolves them against its own
        // ports, so the service itself says 0.
        let ports = port_mappings(spec, |_| Some(0));
        let labels = svc.metadata.labels.clone().unwrap_or_default();
        out.push(Service {
            name: name.clone(),
            namespace: namespace.clone(),
            hostname: hostname(name, namespace, mesh),
            vips,
            ports,
            subject_alt_names: Vec::new(),
            waypoint: waypoint(&labels, &state.namespace_labels(namespace), namespace, mesh),
            load_balancing: None,
            ip_families: Default::default(),
            canonical: true,
        });
    }
    out
}

/// What one pod becomes: a workload, nothing (not running yet, or done),
/// or a reason it was skipped.
pub type PodOutcome = Result<Option<Workload>, String>;

/// The warning for a skipped pod.
pub fn pod_warning(namespace: &str, name: &str, message: String) -> Warning {
    Warning {
        object: ObjectRef {
            kind: "Pod".into(),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        },
        message,
    }
}

/// One pod as a workload. Depends on the pod, its namespace, the Services
/// and the policies of the state; nothing else.
pub fn pod_outcome(
    state: &ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    name: &str,
    pod: &Pod,
) -> Result<Option<Workload>, String> {
    // Borrow, never clone: this runs for every pod on every change.
    let default_status = Default::default();
    let status = pod.status.as_ref().unwrap_or(&default_status);
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let addresses: Vec<IpAddr> = match &status.pod_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect(),
        _ => status.pod_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
    };
    if addresses.is_empty() {
        // Not scheduled or not started yet: nothing to reach.
        return Ok(None);
    }
    let default_spec = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let ns_labels = state.namespace_labels(namespace);
    let mode = enrollment::mode(&ns_labels, labels, annotations);
    let service_account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
    let identity = Identity::new(&mesh.trust_domain, namespace, &service_account)
        .map_err(|e| format!("skipped: no valid identity ({e})"))?;
    let ready =
        status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let (workload_type, workload_name) = owner(pod, name);
    let canonical_name =
        first_label(labels, &["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"])
            .unwrap_or_else(|| workload_name.clone());
    let canonical_revision = first_label(
        labels,
        &["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"],
    )
    .unwrap_or_else(|| "latest".into());
    Ok(Some(Workload {
        uid: format!("{}//Pod/{namespace}/{name}", mesh.cluster_id),
        name: name.to_string(),
        namespace: namespace.to_string(),
        addresses,
        hostname: String::new(),
        network: String::new(),
        protocol: match mode {
            Mode::Ambient | Mode::Sidecar => TunnelProtocol::Hbone,
            Mode::None => TunnelProtocol::None,
        },
        identity,
        waypoint: waypoint(labels, &ns_labels, namespace, mesh),
        network_gateway: None,
        node: spec.node_name.clone().unwrap_or_default(),
        canonical_name,
        canonical_revision,
        workload_type,
        workload_name,
        native_tunnel: false,
        services: backed_services(state, mesh, namespace, labels, pod),
        authorization_policies: super::policies::selected(state, mesh, namespace, labels),
        status: if ready { WorkloadStatus::Healthy } else { WorkloadStatus::Unhealthy },
        cluster_id: mesh.cluster_id.clone(),
        locality: None,
        network_mode: if spec.host_network == Some(true) {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        },
        capacity: 1,
    }))
}

/// Services in the pod's namespace whose selector matches it, with ports as
/// this pod serves them (named target ports resolved against its containers).
fn backed_services(
    state: &ClusterState,
    mesh: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    pod: &Pod,
) -> BTreeMap<NamespacedHostname, Vec<PortMapping>> {
    let named_ports: BTreeMap<String, u16> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let mut out = BTreeMap::new();
    for ((svc_ns, svc_name), svc) in state.services.range((namespace.to_string(), String::new())..)
    {
        if svc_ns != namespace {
            break;
        }
        let Some(spec) = &svc.spec else { continue };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else { continue };
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let ports = port_mappings(spec, |name| named_ports.get(name).copied());
        let key = NamespacedHostname {
            namespace: namespace.to_string(),
            hostname: hostname(svc_name, namespace, mesh),
        };
        out.insert(key, ports);
    }
    out
}

/// A Service's ports; `named` resolves a named target port (`None` leaves
/// the port out). Invalid numbers are left out too.
fn port_mappings(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    named: impl Fn(&str) -> Option<u16>,
) -> Vec<PortMapping> {
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let service_port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            let target_port = match &p.target_port {
                None => service_port,
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok()?,
                Some(IntOrString::String(name)) => named(name)?,
            };
            Some(PortMapping { service_port, target_port })
        })
        .collect()
}

fn hostname(name: &str, namespace: &str, mesh: &MeshConfig) -> String {
    format!("{name}.{namespace}.svc.{}", mesh.cluster_domain)
}

/// The waypoint named by the object's own label, else its namespace's;
/// `none` on the object opts out of the namespace's.
pub(super) fn waypoint(
    labels: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
    namespace: &str,
    mesh: &MeshConfig,
) -> Option<GatewayAddress> {
    let name = labels.get(USE_WAYPOINT).or_else(|| namespace_labels.get(USE_WAYPOINT))?;
    if name == "none" || name.is_empty() {
        return None;
    }
    Some(GatewayAddress {
        destination: GatewayDestination::Hostname(NamespacedHostname {
            namespace: namespace.to_string(),
            hostname: hostname(name, namespace, mesh),
        }),
        hbone_port: WAYPOINT_HBONE_PORT,
    })
}

fn first_label(labels: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| labels.get(*k)).cloned()
}

/// The kind and name of what runs the pod, for telemetry.
fn owner(pod: &Pod, pod_name: &str) -> (WorkloadType, String) {
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            // Deployment ReplicaSets are named <deployment>-<hash>.
            let deployment = o.name.rsplit_once('-').map(|(d, _)| d).unwrap_or(&o.name);
            (WorkloadType::Deployment, deployment.to_string())
        }
        Some(o) if o.kind == "Job" => (WorkloadType::Job, o.name.clone()),
        Some(o) => (WorkloadType::Deployment, o.name.clone()),
        None => (WorkloadType::Pod, pod_name.to_string()),
    }
}
