//! Waypoints: Gateways of class `istio-waypoint`, the bindings that name
//! them, and what each waypoint is sent (only what it fronts: the
//! destination-only design keeps a waypoint's config small).

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::{GatewayDestination, NamespacedHostname, Service, Workload};

use super::{MeshConfig, Warning};
use crate::config::{ClusterState, ObjectRef};

/// The gateway class of waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Waypoint (`namespace/name`) → names of the WDS resources it may see.
pub type Scopes = BTreeMap<String, BTreeSet<String>>;

/// The label saying what traffic a waypoint takes: `service` (the
/// default), `workload`, `all` or `none`.
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";

/// What traffic a waypoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Takes {
    services: bool,
    workloads: bool,
}

/// Hostnames of the waypoints that exist and what each takes, warning
/// about malformed ones.
fn existing(
    state: &ClusterState,
    mesh: &MeshConfig,
    warnings: &mut Vec<Warning>,
) -> BTreeMap<String, Takes> {
    let mut out = BTreeMap::new();
    for ((namespace, name), gw) in &state.gateways {
        if gw.spec.gateway_class_name != WAYPOINT_CLASS {
            continue;
        }
        let hbone = gw.spec.listeners.iter().any(|l| l.port == 15008 && l.protocol == "HBONE");
        if !hbone {
            warnings.push(Warning {
                object: ObjectRef {
                    kind: "Gateway".into(),
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                },
                message: "waypoint has no listener on port 15008 with protocol HBONE".into(),
            });
        }
        let object = || ObjectRef {
            kind: "Gateway".into(),
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        let takes = match gw.labels.get(WAYPOINT_FOR).map(String::as_str).unwrap_or("service") {
            "service" => Takes { services: true, workloads: false },
            "workload" => Takes { services: false, workloads: true },
            "all" => Takes { services: true, workloads: true },
            "none" => Takes { services: false, workloads: false },
            other => {
                // Unknown: take everything bound to it rather than let
                // bound traffic go around it.
                warnings.push(Warning {
                    object: object(),
                    message: format!("{WAYPOINT_FOR}={other:?} is not service, workload, all or none; taken as all"),
                });
                Takes { services: true, workloads: true }
            }
        };
        out.insert(format!("{name}.{namespace}.svc.{}", mesh.cluster_domain), takes);
    }
    out
}

/// Drops bindings to waypoints that do not exist (traffic then goes
/// straight to the destination, as in Istio), with a warning on the object,
/// and bindings of a kind the waypoint does not take (`istio.io/waypoint-for`:
/// by default a waypoint takes traffic addressed to services, not to pods).
pub fn check_bindings(
    state: &ClusterState,
    mesh: &MeshConfig,
    workloads: &mut [Workload],
    services: &mut [Service],
    warnings: &mut Vec<Warning>,
) {
    let existing = existing(state, mesh, warnings);
    let mut check = |waypoint: &mut Option<mesh_core::GatewayAddress>, object: ObjectRef| {
        let Some(GatewayDestination::Hostname(h)) = waypoint.as_ref().map(|w| &w.destination)
        else {
            return;
        };
        match existing.get(&h.hostname) {
            None => {
                warnings.push(Warning {
                    object,
                    message: format!(
                        "bound to waypoint {}, which does not exist; binding ignored",
                        h.hostname
                    ),
                });
                *waypoint = None;
            }
            Some(takes) if object.kind == "Service" && !takes.services => {
                warnings.push(Warning {
                    object,
                    message: format!(
                        "bound to waypoint {}, which does not take service traffic ({WAYPOINT_FOR}); binding ignored",
                        h.hostname
                    ),
                });
                *waypoint = None;
            }
            // Pods inherit their namespace's binding; a service waypoint
            // does not take what is addressed to them, as in Istio.
            Some(takes) if object.kind == "Pod" && !takes.workloads => *waypoint = None,
            Some(_) => {}
        }
    };
    for w in workloads.iter_mut() {
        let object = ObjectRef {
            kind: "Pod".into(),
            namespace: Some(w.namespace.clone()),
            name: w.name.clone(),
        };
        check(&mut w.waypoint, object);
    }
    for s in services.iter_mut() {
        let object = ObjectRef {
            kind: "Service".into(),
            namespace: Some(s.namespace.clone()),
            name: s.name.clone(),
        };
        check(&mut s.waypoint, object);
    }
}

/// What each waypoint may see: the services bound to it, the workloads
/// backing them, the workloads bound to it directly, and the services its
/// routes forward to (`backends`: fronted service → backend services) with
/// their workloads. Names are WDS names; a service's name is also the name
/// of its `ServiceRoutes`.
pub fn scopes(
    workloads: &[Workload],
    services: &[Service],
    backends: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Scopes {
    let key_of = |h: &NamespacedHostname| {
        let name = h.hostname.split('.').next().unwrap_or_default();
        format!("{}/{name}", h.namespace)
    };
    let bound = |w: &Option<mesh_core::GatewayAddress>| match w.as_ref().map(|w| &w.destination) {
        Some(GatewayDestination::Hostname(h)) => Some(key_of(h)),
        _ => None,
    };
    let mut scopes = Scopes::new();
    // Service → the waypoints that need its workloads.
    let mut fronted: BTreeMap<NamespacedHostname, std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for s in services {
        if let Some(waypoint) = bound(&s.waypoint) {
            scopes.entry(waypoint.clone()).or_default().insert(s.key().to_string());
            fronted.entry(s.key()).or_default().insert(waypoint.clone());
            for backend in backends.get(&s.key().to_string()).into_iter().flatten() {
                let Some((namespace, hostname)) = backend.split_once('/') else { continue };
                let key =
                    NamespacedHostname { namespace: namespace.into(), hostname: hostname.into() };
                scopes.entry(waypoint.clone()).or_default().insert(backend.clone());
                // Its workloads follow below, as a fronted service's do.
                fronted.entry(key).or_default().insert(waypoint.clone());
            }
        }
    }
    for w in workloads {
        if let Some(waypoint) = bound(&w.waypoint) {
            scopes.entry(waypoint).or_default().insert(w.uid.clone());
        }
        for service in w.services.keys() {
            for waypoint in fronted.get(service).into_iter().flatten() {
                scopes.entry(waypoint.clone()).or_default().insert(w.uid.clone());
            }
        }
    }
    scopes
}
