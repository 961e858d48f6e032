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

/// Hostnames of the waypoints that exist, warning about malformed ones.
fn existing(
    state: &ClusterState,
    mesh: &MeshConfig,
    warnings: &mut Vec<Warning>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
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
        out.insert(format!("{name}.{namespace}.svc.{}", mesh.cluster_domain));
    }
    out
}

/// Drops bindings to waypoints that do not exist (traffic then goes
/// straight to the destination, as in Istio), with a warning on the object.
pub fn check_bindings(
    state: &ClusterState,
    mesh: &MeshConfig,
    workloads: &mut [Workload],
    services: &mut [Service],
    warnings: &mut Vec<Warning>,
) {
    let existing = existing(state, mesh, warnings);
    let mut check = |waypoint: &mut Option<mesh_core::GatewayAddress>, object: ObjectRef| {
        if let Some(GatewayDestination::Hostname(h)) = waypoint.as_ref().map(|w| &w.destination)
            && !existing.contains(&h.hostname)
        {
            warnings.push(Warning {
                object,
                message: format!(
                    "bound to waypoint {}, which does not exist; binding ignored",
                    h.hostname
                ),
            });
            *waypoint = None;
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
