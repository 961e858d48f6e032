//! Waypoints: Gateways of class `istio-waypoint`, the bindings that name
//! them, and what each waypoint is sent (only what it fronts: the
//! destination-only design keeps a waypoint's config small).

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::policy::{Action, Authorization, Clause, Match, PolicyScope, Rule, StringMatch};
use mesh_core::{GatewayDestination, NamespacedHostname, Service, TunnelProtocol, Workload};

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

/// Checks bindings against the waypoints that exist.
///
/// A binding to a waypoint that does not exist is **kept**, with a warning
/// on the object: proxies cannot resolve the waypoint and refuse the
/// traffic (fail closed; Istio sends it straight to the destination, which
/// skips every L7 policy the waypoint would have applied). A missing
/// waypoint's `istio.io/waypoint-for` is unknown, so pods keep their
/// binding too. Only `istio.io/use-waypoint: none` (or no label) sends
/// traffic direct.
///
/// Bindings of a kind an existing waypoint does not take are dropped
/// (`istio.io/waypoint-for`: by default a waypoint takes traffic addressed
/// to services, not to pods).
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
                        "bound to waypoint {}, which does not exist; connections to it are refused until it does (fail closed; istio.io/use-waypoint=none sends them direct)",
                        h.hostname
                    ),
                });
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

/// A namespace label: `allow` lets the namespace's workloads take traffic
/// that did not come through their waypoint (for a migration; off by
/// default).
pub const WAYPOINT_BYPASS: &str = "mesh.dev/waypoint-bypass";

/// The name of every bypass guard starts with this. `~` cannot appear in
/// a Kubernetes name, so a guard never collides with a user's policy.
pub const GUARD_PREFIX: &str = "waypoint-only~";

/// The bypass guards: for every workload behind a waypoint (bound itself,
/// or backing a service bound to one) and enforced by a ztunnel, one L4
/// DENY of every caller that is not one of its waypoints, plaintext
/// included, listed on the workload. So a client that dials the pod
/// directly, around the waypoint and its L7 policies, is refused at the
/// destination's ztunnel (Istio lets it through: istio#51445).
///
/// A waypoint's principals: `<td>/ns/<ns>/sa/<gateway>` (the account a
/// waypoint runs as, as istiod deploys it) and those of the pods that back
/// its Service. A missing waypoint still has the first, so its workloads
/// stay guarded. Workloads in a namespace labelled
/// `mesh.dev/waypoint-bypass: allow` get no guard.
pub fn bypass_guards(
    state: &ClusterState,
    mesh: &MeshConfig,
    workloads: &mut [Workload],
    services: &[Service],
) -> Vec<Authorization> {
    let waypoint_of = |w: &Option<mesh_core::GatewayAddress>| match w.as_ref()?.destination {
        GatewayDestination::Hostname(ref h) => Some(h.clone()),
        GatewayDestination::Address(_) => None,
    };
    let service_waypoints: BTreeMap<NamespacedHostname, NamespacedHostname> =
        services.iter().filter_map(|s| Some((s.key(), waypoint_of(&s.waypoint)?))).collect();
    // Principals of each waypoint: by convention, and of its pods.
    let mut principals: BTreeMap<NamespacedHostname, BTreeSet<String>> = BTreeMap::new();
    for h in service_waypoints
        .values()
        .cloned()
        .chain(workloads.iter().filter_map(|w| waypoint_of(&w.waypoint)))
    {
        let gateway = h.hostname.split('.').next().unwrap_or_default();
        let conventional = format!("{}/ns/{}/sa/{gateway}", mesh.trust_domain, h.namespace);
        principals.entry(h).or_default().insert(conventional);
    }
    for w in workloads.iter() {
        for key in w.services.keys() {
            if let Some(set) = principals.get_mut(key) {
                let id = &w.identity;
                set.insert(format!(
                    "{}/ns/{}/sa/{}",
                    id.trust_domain(),
                    id.namespace(),
                    id.service_account()
                ));
            }
        }
    }
    let mut guards: BTreeMap<String, Authorization> = BTreeMap::new();
    let mut bypass_allowed: BTreeMap<String, bool> = BTreeMap::new();
    for w in workloads.iter_mut() {
        let allowed = *bypass_allowed.entry(w.namespace.clone()).or_insert_with(|| {
            state.namespace_labels(&w.namespace).get(WAYPOINT_BYPASS).is_some_and(|v| v == "allow")
        });
        if w.protocol != TunnelProtocol::Hbone || allowed {
            continue;
        }
        let fronting: BTreeSet<NamespacedHostname> = waypoint_of(&w.waypoint)
            .into_iter()
            .chain(w.services.keys().filter_map(|k| service_waypoints.get(k).cloned()))
            .collect();
        if fronting.is_empty() {
            continue;
        }
        let names: Vec<String> = fronting
            .iter()
            .map(|h| {
                format!("{}.{}", h.namespace, h.hostname.split('.').next().unwrap_or_default())
            })
            .collect();
        let name = format!("{GUARD_PREFIX}{}", names.join("+"));
        let key = format!("{}/{name}", w.namespace);
        guards.entry(key.clone()).or_insert_with(|| {
            let allowed: BTreeSet<&String> =
                fronting.iter().flat_map(|h| principals.get(h).into_iter().flatten()).collect();
            Authorization {
                name,
                namespace: w.namespace.clone(),
                scope: PolicyScope::WorkloadSelector,
                action: Action::Deny,
                rules: vec![Rule {
                    clauses: vec![Clause {
                        matches: vec![Match {
                            not_principals: allowed
                                .into_iter()
                                .map(|p| StringMatch::Exact(p.clone()))
                                .collect(),
                            ..Match::default()
                        }],
                    }],
                }],
                dry_run: false,
            }
        });
        w.authorization_policies.push(key);
    }
    guards.into_values().collect()
}
