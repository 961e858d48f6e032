//! A broken edit of a security object keeps its last valid version in
//! force, as the Kubernetes API server would by refusing the update.
//!
//! Each load replaces what the mesh reads wholesale (a directory is read
//! again; a watcher rebuilds its state), so the memory of what was valid
//! lives here, between loads: [`LastValid::apply`] remembers every valid
//! security object and, where one was refused, puts its last valid version
//! back in place of the fail-closed stand-in (`crate::security`). An
//! object that disappears from the source is forgotten: deleting a policy
//! is not an error.

use std::collections::BTreeMap;

use super::istio::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use super::objects::{BadObject, InForce, Named};
use super::state::{ClusterState, Key};

/// The last valid version of each security object, across loads.
#[derive(Debug, Default)]
pub struct LastValid {
    authorization_policies: BTreeMap<Key, Named<AuthorizationPolicySpec>>,
    peer_authentications: BTreeMap<Key, Named<PeerAuthenticationSpec>>,
    request_authentications: BTreeMap<Key, Named<RequestAuthenticationSpec>>,
}

impl LastValid {
    /// Called on every load, in order: swaps stand-ins for last valid
    /// versions in `state` (marking their reports in `bad`), then remembers
    /// what is valid now.
    pub fn apply(&mut self, state: &mut ClusterState, bad: &mut [BadObject]) {
        let restored_policies =
            restore(&mut state.authorization_policies, &mut self.authorization_policies);
        let restored_peer =
            restore(&mut state.peer_authentications, &mut self.peer_authentications);
        let restored_authn =
            restore(&mut state.request_authentications, &mut self.request_authentications);
        let mark = |kind: &str, restored: &[Key], bad: &mut [BadObject]| {
            for report in bad.iter_mut() {
                let Some(object) = &report.object else { continue };
                let key = (object.namespace.clone().unwrap_or_default(), object.name.clone());
                if object.kind == kind
                    && report.in_force == Some(InForce::FailClosed)
                    && restored.contains(&key)
                {
                    report.in_force = Some(InForce::LastValid);
                }
            }
        };
        mark("AuthorizationPolicy", &restored_policies, bad);
        mark("PeerAuthentication", &restored_peer, bad);
        mark("RequestAuthentication", &restored_authn, bad);
    }
}

/// Puts remembered versions in place of stand-ins in `current`, remembers
/// the valid ones, forgets what is gone; returns the keys restored.
fn restore<S: Clone>(
    current: &mut BTreeMap<Key, Named<S>>,
    remembered: &mut BTreeMap<Key, Named<S>>,
) -> Vec<Key> {
    remembered.retain(|key, _| current.contains_key(key));
    let mut restored = Vec::new();
    for (key, object) in current.iter_mut() {
        if !object.fail_closed {
            remembered.insert(key.clone(), object.clone());
        } else if let Some(valid) = remembered.get(key) {
            *object = valid.clone();
            restored.push(key.clone());
        }
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::Snapshot;
    use crate::parse_documents;

    fn load(yaml: &str, last: &mut LastValid) -> Snapshot {
        let (objects, mut bad) = parse_documents(yaml, "t.yaml");
        let (mut state, dup) =
            ClusterState::from_objects(objects.into_iter().map(|o| (o, "t".into())));
        bad.extend(dup);
        last.apply(&mut state, &mut bad);
        Snapshot { state, bad, ..Snapshot::default() }
    }

    const VALID: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: apps}\nspec: {action: DENY, rules: [{from: [{source: {namespaces: [other]}}]}]}\n";
    const BROKEN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: apps}\nspec: {action: DENY, rules: [{from: [{source: {namespace: [other]}}]}]}\n";

    fn policy(s: &Snapshot) -> &Named<AuthorizationPolicySpec> {
        &s.state.authorization_policies[&("apps".to_string(), "p".to_string())]
    }

    #[test]
    fn a_broken_edit_keeps_the_last_valid_version() {
        let mut last = LastValid::default();
        let first = load(VALID, &mut last);
        assert!(first.bad.is_empty(), "{:?}", first.bad);
        let valid = policy(&first).clone();

        let broken = load(BROKEN, &mut last);
        assert_eq!(policy(&broken), &valid, "the valid version is back in place");
        assert_eq!(broken.bad.len(), 1);
        assert_eq!(broken.bad[0].in_force, Some(InForce::LastValid));
        let text = broken.bad[0].to_string();
        assert!(
            text.contains("spec.rules[0].from[0].source") && text.contains("namespace"),
            "{text}"
        );
        assert!(text.contains("last valid version stays in force"), "{text}");

        // Still broken on the next load: still the last valid version.
        let again = load(BROKEN, &mut last);
        assert_eq!(policy(&again), &valid);
    }

    #[test]
    fn without_a_valid_version_the_stand_in_fails_closed() {
        let mut last = LastValid::default();
        let broken = load(BROKEN, &mut last);
        assert!(policy(&broken).fail_closed);
        assert_eq!(broken.bad[0].in_force, Some(InForce::FailClosed));
        assert!(broken.bad[0].to_string().contains("is denied"), "{}", broken.bad[0]);
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let mut last = LastValid::default();
        load(VALID, &mut last);
        load("", &mut last);
        let broken = load(BROKEN, &mut last);
        assert!(policy(&broken).fail_closed, "no memory of the deleted version");
    }
}
