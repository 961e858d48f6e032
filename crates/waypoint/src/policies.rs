//! The `mesh.l7.Authorization` and `mesh.l7.Authentication` resources the
//! control plane sends, indexed for this waypoint. A resource that does not
//! read is NACKed with the field at fault and its last good version stays
//! in force.
//!
//! Until the first response for both types has been applied, every
//! request is denied: a waypoint that has its services but not yet their
//! policies must not serve them as if none existed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use l7::Target;
use l7::authz::{Action, Policy, Rule};
use l7::policies::{Applicable, AttachedAuthentication, AttachedPolicy, PolicyIndex};
use mesh_proto::{l7 as proto, type_url};
use prost::Message;
use xds::{Handler, Rejected, Update};

#[derive(Debug, Default)]
struct State {
    synced_policies: bool,
    synced_authentications: bool,
    policies: HashMap<String, AttachedPolicy>,
    authentications: HashMap<String, AttachedAuthentication>,
    index: PolicyIndex,
}

impl State {
    fn reindex(&mut self, waypoint: &str) {
        self.index =
            PolicyIndex::build(self.policies.values(), self.authentications.values(), waypoint);
    }
}

/// This waypoint's policies.
#[derive(Debug)]
pub struct PolicyStore {
    /// `namespace/name` of our Gateway.
    waypoint: String,
    state: RwLock<State>,
    /// Denies everything: what applies before the first response.
    waiting: Arc<Applicable>,
}

impl PolicyStore {
    /// An empty store for the waypoint `namespace/name`, denying all until
    /// its first update.
    pub fn new(waypoint: &str) -> Arc<Self> {
        let deny_all = Policy {
            name: "(waiting for the control plane's policies)".into(),
            action: Action::Deny,
            rules: vec![Rule::default()],
        };
        Arc::new(Self {
            waypoint: waypoint.to_string(),
            state: RwLock::default(),
            waiting: Arc::new(Applicable {
                http: vec![deny_all.clone()],
                tcp: vec![deny_all],
                ..Applicable::default()
            }),
        })
    }

    /// The policies that apply to requests to `target`.
    pub fn applicable(&self, target: &Target) -> Arc<Applicable> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if !(state.synced_policies && state.synced_authentications) {
            return self.waiting.clone();
        }
        match target {
            Target::Service { key, .. } => state.index.for_service(key),
            Target::Workload { .. } => state.index.for_workload(),
        }
    }

    /// Every RequestAuthentication, sorted by name.
    pub fn authentications(&self) -> Vec<AttachedAuthentication> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = state.authentications.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every policy by name, sorted: `(name, policy)`.
    pub fn all(&self) -> Vec<(String, AttachedPolicy)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = state.policies.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Applies one update of a type to its map: removals, then each resource
/// read (its name must be its content's) or rejected, the last good
/// version of a rejected one kept.
fn apply_to<M: Message + Default, T>(
    map: &mut HashMap<String, T>,
    update: Update,
    kind: &str,
    read: impl Fn(&M) -> Result<T, l7::ConfigError>,
    name_of: impl Fn(&T) -> &str,
) -> Vec<Rejected> {
    for name in &update.removed {
        map.remove(name);
    }
    let mut rejected = Vec::new();
    for (name, body) in update.resources {
        let parsed = M::decode(body.value.as_slice())
            .map_err(|e| format!("not a {kind}: {e}"))
            .and_then(|m| read(&m).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) if name_of(&value) == name => {
                map.insert(name, value);
            }
            Ok(value) => rejected.push(Rejected {
                reason: format!("resource name does not match its content ({})", name_of(&value)),
                name,
            }),
            Err(reason) => {
                tracing::warn!(resource = %name, %reason, "{kind} refused; the last good version stays");
                rejected.push(Rejected { name, reason });
            }
        }
    }
    rejected
}

/// Applies `mesh.l7.Authorization` updates.
#[derive(Debug, Clone)]
pub struct PolicyHandler(pub Arc<PolicyStore>);

impl Handler for PolicyHandler {
    fn type_url(&self) -> &str {
        type_url::L7_AUTHORIZATION
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        let mut state = self.0.state.write().unwrap_or_else(|p| p.into_inner());
        let rejected = apply_to(
            &mut state.policies,
            update,
            "mesh.l7.Authorization",
            |p: &proto::Authorization| AttachedPolicy::try_from(p),
            |p| p.http.name.as_str(),
        );
        state.reindex(&self.0.waypoint);
        state.synced_policies = true;
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}

/// Applies `mesh.l7.Authentication` updates.
#[derive(Debug, Clone)]
pub struct AuthenticationHandler(pub Arc<PolicyStore>);

impl Handler for AuthenticationHandler {
    fn type_url(&self) -> &str {
        type_url::L7_AUTHENTICATION
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        let mut state = self.0.state.write().unwrap_or_else(|p| p.into_inner());
        let rejected = apply_to(
            &mut state.authentications,
            update,
            "mesh.l7.Authentication",
            |a: &proto::Authentication| AttachedAuthentication::try_from(a),
            |a| a.name.as_str(),
        );
        state.reindex(&self.0.waypoint);
        state.synced_authentications = true;
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost_types::Any;

    fn any(p: &proto::Authorization) -> Any {
        Any { type_url: type_url::L7_AUTHORIZATION.into(), value: p.encode_to_vec() }
    }

    fn service() -> Target {
        Target::Service { key: "apps/web".into(), port: 80 }
    }

    #[test]
    fn nothing_is_allowed_before_the_first_update_and_a_bad_edit_keeps_the_last_good_one() {
        let store = PolicyStore::new("apps/waypoint");
        let mut handler = PolicyHandler(store.clone());
        let waiting = store.applicable(&service());
        assert_eq!(waiting.http[0].action, Action::Deny, "deny all until the first update");
        handler.apply(Update { resources: vec![], removed: vec![] }).unwrap();
        assert!(!store.applicable(&service()).is_empty(), "JWT rules not yet received");
        AuthenticationHandler(store.clone())
            .apply(Update { resources: vec![], removed: vec![] })
            .unwrap();
        assert!(store.applicable(&service()).is_empty(), "empty first updates: no policy");

        let good = proto::Authorization {
            namespace: "apps".into(),
            name: "deny-admin".into(),
            action: proto::AuthorizationAction::Deny as i32,
            rules: vec![proto::AuthorizationRule::default()],
            waypoints: vec!["apps/waypoint".into()],
            ..Default::default()
        };
        let name = "apps/deny-admin".to_string();
        handler
            .apply(Update { resources: vec![(name.clone(), any(&good))], removed: vec![] })
            .unwrap();
        assert_eq!(store.applicable(&service()).http.len(), 1);
        assert_eq!(
            store
                .applicable(&Target::Workload {
                    endpoint: l7::balance::Endpoint {
                        uid: "w".into(),
                        address: "10.0.0.1:80".parse().unwrap()
                    },
                })
                .http
                .len(),
            1,
            "waypoint-wide: workloads too"
        );

        let mut bad = good.clone();
        bad.rules[0].when.push(proto::AuthorizationCondition {
            key: "request.hedaers[x]".into(),
            values: vec!["1".into()],
            not_values: vec![],
        });
        let rejected = handler
            .apply(Update { resources: vec![(name.clone(), any(&bad))], removed: vec![] })
            .unwrap_err();
        assert!(rejected[0].reason.contains("rules[0].when[0].key"), "{}", rejected[0].reason);
        assert_eq!(store.applicable(&service()).http.len(), 1, "the good version stays");

        let garbage = Any { type_url: type_url::L7_AUTHORIZATION.into(), value: vec![0xff, 0xff] };
        let rejected = handler
            .apply(Update { resources: vec![(name.clone(), garbage)], removed: vec![] })
            .unwrap_err();
        assert!(
            rejected[0].reason.contains("not a mesh.l7.Authorization"),
            "{}",
            rejected[0].reason
        );

        let rejected = handler
            .apply(Update { resources: vec![("apps/other".into(), any(&good))], removed: vec![] })
            .unwrap_err();
        assert!(rejected[0].reason.contains("does not match"), "{}", rejected[0].reason);

        handler.apply(Update { resources: vec![], removed: vec![name] }).unwrap();
        assert!(store.applicable(&service()).is_empty());
        assert!(store.all().is_empty());
    }
}
