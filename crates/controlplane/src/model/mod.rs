//! The ambient model: from Kubernetes objects to what proxies are sent.
//!
//! Pure functions of a [`ClusterState`]: no I/O, so every rule is tested
//! with objects built in the test.
//!
//! - [`enrollment`]: which pods the mesh captures;
//! - [`workloads`]: pods and services as `istio.workload.Address`es;
//! - [`endpoint_slices`]: endpoints of Services without a selector;
//! - [`service_entries`]: ServiceEntries as services and endpoints;
//! - [`waypoints`]: which waypoints exist and what each may see;
//! - [`routes`]: HTTPRoute, VirtualService and DestinationRule as each
//!   fronted service's L7 routes;
//! - [`policies`]: AuthorizationPolicy and PeerAuthentication as L4
//!   `istio.security.Authorization`s, failing closed where L4 cannot say
//!   what a rule says; policies attached with `targetRefs` as the
//!   waypoints' `mesh.l7.Authorization`s ([`policies::targeted`]).

pub mod endpoint_slices;
pub use mesh_config::enrollment;
pub mod policies;
pub mod routes;
pub mod service_entries;
pub mod waypoints;
pub mod workloads;

use std::collections::BTreeMap;

use mesh_core::policy::Authorization;
use mesh_core::{Service, Workload};

use crate::config::{ClusterState, ObjectRef};

/// Mesh-wide settings the model needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// Trust domain of every identity.
    pub trust_domain: String,
    /// Kubernetes cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Policies here apply mesh-wide (Istio's root namespace).
    pub root_namespace: String,
    /// Cluster id written into workloads.
    pub cluster_id: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
        }
    }
}

/// A note about an object the model translated with a change of meaning
/// (or skipped). Shown in logs, metrics and the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The object.
    pub object: ObjectRef,
    /// What happened to it.
    pub message: String,
}

/// Everything proxies are sent, computed from one [`ClusterState`].
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Services.
    pub services: Vec<Service>,
    /// L4 policies.
    pub policies: Vec<Authorization>,
    /// Notes about translations.
    pub warnings: Vec<Warning>,
    /// What each waypoint may see.
    pub waypoint_scopes: waypoints::Scopes,
    /// L7 routes of the services waypoints front, and of their backends.
    pub routes: routes::Routes,
    /// L7 policies (AuthorizationPolicies with `targetRefs`), for waypoints.
    pub l7_policies: Vec<mesh_proto::l7::Authorization>,
    /// Who enforces each AuthorizationPolicy, by `namespace/name`.
    pub enforcement: BTreeMap<String, policies::Enforcement>,
    /// JWT rules (RequestAuthentications with `targetRefs`), for waypoints;
    /// set by [`Model::attach_authentications`].
    pub l7_authentications: Vec<mesh_proto::l7::Authentication>,
    /// Each pod's outcome, kept so [`Model::update`] can reuse it.
    pods: BTreeMap<(String, String), workloads::PodOutcome>,
}

impl Model {
    /// Computes the model.
    pub fn compute(state: &ClusterState, mesh: &MeshConfig) -> Self {
        let pods = state
            .pods
            .iter()
            .map(|((ns, name), pod)| {
                ((ns.clone(), name.clone()), workloads::pod_outcome(state, mesh, ns, name, pod))
            })
            .collect();
        Self::assemble(state, mesh, pods)
    }

    /// Computes the model for `state`, which followed `previous` (the state
    /// this model was computed from). When only pods changed (the common
    /// case: pods come and go), only the changed pods are recomputed;
    /// anything else can change many workloads and recomputes the whole.
    pub fn update(&self, previous: &ClusterState, state: &ClusterState, mesh: &MeshConfig) -> Self {
        if !only_pods_changed(previous, state) {
            return Self::compute(state, mesh);
        }
        let pods = state
            .pods
            .iter()
            .map(|(key, pod)| {
                let unchanged = previous.pods.get(key) == Some(pod);
                let outcome = match self.pods.get(key) {
                    Some(outcome) if unchanged => outcome.clone(),
                    _ => workloads::pod_outcome(state, mesh, &key.0, &key.1, pod),
                };
                (key.clone(), outcome)
            })
            .collect();
        Self::assemble(state, mesh, pods)
    }

    fn assemble(
        state: &ClusterState,
        mesh: &MeshConfig,
        pods: BTreeMap<(String, String), workloads::PodOutcome>,
    ) -> Self {
        let mut warnings = Vec::new();
        let mut services = workloads::services(state, mesh);
        let mut workloads = Vec::with_capacity(pods.len());
        for ((ns, name), outcome) in &pods {
            match outcome {
                Ok(Some(w)) => workloads.push(w.clone()),
                Ok(None) => {}
                Err(message) => warnings.push(workloads::pod_warning(ns, name, message.clone())),
            }
        }
        endpoint_slices::apply(state, mesh, &mut workloads);
        let (entry_services, entry_workloads) =
            service_entries::translate(state, mesh, &mut warnings);
        services.extend(entry_services);
        workloads.extend(entry_workloads);
        waypoints::check_bindings(state, mesh, &mut workloads, &mut services, &mut warnings);
        let routes = routes::translate(state, mesh, &services, &workloads, &mut warnings);
        let mut waypoint_scopes = waypoints::scopes(&workloads, &services, &routes.backends);
        let l7_policies = policies::targeted::translate(state, mesh, &services, &mut warnings);
        policies::targeted::scope(&l7_policies, &services, &mut waypoint_scopes);
        let mut policies = policies::authorizations(state, mesh, &mut warnings);
        policies.extend(waypoints::bypass_guards(state, mesh, &mut workloads, &services));
        // Selector policies no workload lists select nothing: say so.
        let listed: std::collections::HashSet<&str> = workloads
            .iter()
            .flat_map(|w| w.authorization_policies.iter().map(String::as_str))
            .collect();
        for p in &policies {
            if p.scope == mesh_core::policy::PolicyScope::WorkloadSelector
                && p.namespace != mesh.root_namespace
                && !listed.contains(p.key().as_str())
            {
                warnings.push(Warning {
                    object: ObjectRef {
                        kind: "AuthorizationPolicy".into(),
                        namespace: Some(p.namespace.clone()),
                        name: p.name.clone(),
                    },
                    message:
                        "selector matches no running pod; the policy applies to nothing for now"
                            .into(),
                });
            }
        }
        let reached = policies::targeted::enforcers(&l7_policies, &services);
        let enforcement = policies::enforcement(state, &listed, &reached, &warnings);
        Self {
            workloads,
            services,
            policies,
            warnings,
            waypoint_scopes,
            routes,
            l7_policies,
            enforcement,
            l7_authentications: Vec::new(),
            pods,
        }
    }

    /// Adds the RequestAuthentications, with the keys fetched from their
    /// `jwksUri`s (`jwks`), their warnings and their scopes. Kept apart
    /// from [`Model::compute`] because keys arrive on their own schedule:
    /// new keys redo only this part (calling it again replaces what it
    /// added).
    pub fn attach_authentications(
        &mut self,
        state: &ClusterState,
        mesh: &MeshConfig,
        jwks: &policies::authn::Jwks,
    ) {
        // Again from scratch: keys may change under the same model.
        self.warnings.retain(|w| w.object.kind != "RequestAuthentication");
        for names in self.waypoint_scopes.values_mut() {
            names.retain(|n| !n.starts_with(policies::authn::AUTHN_SCOPE_PREFIX));
        }
        self.l7_authentications =
            policies::authn::translate(state, mesh, &self.services, jwks, &mut self.warnings);
        policies::authn::scope(&self.l7_authentications, &self.services, &mut self.waypoint_scopes);
    }
}

/// Whether everything but pods (and nodes, which the model does not read)
/// is the same in both states.
fn only_pods_changed(a: &ClusterState, b: &ClusterState) -> bool {
    a.namespaces == b.namespaces
        && a.services == b.services
        && a.endpoint_slices == b.endpoint_slices
        && a.authorization_policies == b.authorization_policies
        && a.peer_authentications == b.peer_authentications
        && a.request_authentications == b.request_authentications
        && a.gateways == b.gateways
        && a.service_entries == b.service_entries
        && a.http_routes == b.http_routes
        && a.virtual_services == b.virtual_services
        && a.destination_rules == b.destination_rules
}
