//! Publishing the model to the xDS snapshot store.
//!
//! The whole model is written each time; the store keeps versions by
//! content, so unchanged resources are no-ops and proxies are sent only
//! what changed (one pod's change reaches proxies as one workload).

use std::collections::HashSet;

use mesh_proto::type_url;
use prost_types::Any;
use tracing::warn;
use xds::{Change, SnapshotStore};

use crate::model::Model;

/// Brings `store` to exactly the model's resources.
pub fn publish(store: &SnapshotStore, model: &Model) {
    let mut changes = Vec::new();
    let mut addresses = HashSet::new();
    for address in model.addresses() {
        let name = address.resource_name();
        match Any::from_msg(&mesh_proto::workload::Address::from(&address)) {
            Ok(body) => {
                addresses.insert(name.clone());
                changes.push(Change::Put { type_url: type_url::ADDRESS.into(), name, body });
            }
            Err(e) => warn!(%name, error = %e, "cannot encode address"),
        }
    }
    let mut policies = HashSet::new();
    for policy in &model.policies {
        let name = policy.key();
        match Any::from_msg(&mesh_proto::security::Authorization::from(policy)) {
            Ok(body) => {
                policies.insert(name.clone());
                changes.push(Change::Put { type_url: type_url::AUTHORIZATION.into(), name, body });
            }
            Err(e) => warn!(%name, error = %e, "cannot encode policy"),
        }
    }
    for (type_url, keep) in [(type_url::ADDRESS, &addresses), (type_url::AUTHORIZATION, &policies)]
    {
        for name in store.names(type_url) {
            if !keep.contains(&name) {
                changes.push(Change::Remove { type_url: type_url.into(), name });
            }
        }
    }
    store.apply(changes);
}
