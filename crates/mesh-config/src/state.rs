//! Every object the model reads, at one moment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::istio::{
    AuthorizationPolicySpec, GatewaySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
    ServiceEntrySpec,
};
use super::objects::{BadObject, Named, Object};
use super::routing::{DestinationRuleSpec, HttpRouteSpec, VirtualServiceSpec};

/// (namespace, name).
pub type Key = (String, String);

/// The cluster as the model sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// By name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods.
    pub pods: BTreeMap<Key, Pod>,
    /// Services.
    pub services: BTreeMap<Key, Service>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// AuthorizationPolicies.
    pub authorization_policies: BTreeMap<Key, Named<AuthorizationPolicySpec>>,
    /// PeerAuthentications.
    pub peer_authentications: BTreeMap<Key, Named<PeerAuthenticationSpec>>,
    /// RequestAuthentications.
    pub request_authentications: BTreeMap<Key, Named<RequestAuthenticationSpec>>,
    /// Gateways (waypoints among them).
    pub gateways: BTreeMap<Key, Named<GatewaySpec>>,
    /// ServiceEntries.
    pub service_entries: BTreeMap<Key, Named<ServiceEntrySpec>>,
    /// HTTPRoutes.
    pub http_routes: BTreeMap<Key, Named<HttpRouteSpec>>,
    /// VirtualServices.
    pub virtual_services: BTreeMap<Key, Named<VirtualServiceSpec>>,
    /// DestinationRules.
    pub destination_rules: BTreeMap<Key, Named<DestinationRuleSpec>>,
    /// Node names.
    pub nodes: std::collections::BTreeSet<String>,
}

impl ClusterState {
    /// Builds from objects; a second object with the same kind and name is
    /// reported and skipped (the first wins).
    pub fn from_objects(
        objects: impl IntoIterator<Item = (Object, String)>,
    ) -> (Self, Vec<BadObject>) {
        let mut state = Self::default();
        let mut bad = Vec::new();
        for (object, source) in objects {
            let reference = object.reference();
            let key = || (reference.namespace.clone().unwrap_or_default(), reference.name.clone());
            let fresh = match object {
                Object::Namespace(ns) => insert(&mut state.namespaces, reference.name.clone(), *ns),
                Object::Node(_) => state.nodes.insert(reference.name.clone()),
                Object::Pod(pod) => insert(&mut state.pods, key(), *pod),
                Object::Service(svc) => insert(&mut state.services, key(), *svc),
                Object::EndpointSlice(s) => insert(&mut state.endpoint_slices, key(), *s),
                Object::ServiceAccount(_) => true,
                Object::AuthorizationPolicy(p) => {
                    insert(&mut state.authorization_policies, key(), p)
                }
                Object::PeerAuthentication(p) => insert(&mut state.peer_authentications, key(), p),
                Object::RequestAuthentication(r) => {
                    insert(&mut state.request_authentications, key(), r)
                }
                Object::Gateway(g) => insert(&mut state.gateways, key(), g),
                Object::ServiceEntry(e) => insert(&mut state.service_entries, key(), e),
                Object::HttpRoute(r) => insert(&mut state.http_routes, key(), *r),
                Object::VirtualService(v) => insert(&mut state.virtual_services, key(), *v),
                Object::DestinationRule(d) => insert(&mut state.destination_rules, key(), *d),
            };
            if !fresh {
                bad.push(BadObject::skipped(
                    source,
                    Some(reference),
                    "defined more than once; the first definition is used".into(),
                ));
            }
        }
        (state, bad)
    }

    /// A namespace's labels (empty when the namespace is not declared).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces.get(namespace).and_then(|ns| ns.metadata.labels.clone()).unwrap_or_default()
    }
}

fn insert<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: V) -> bool {
    if map.contains_key(&key) {
        return false;
    }
    map.insert(key, value);
    true
}
