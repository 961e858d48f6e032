//! Which resources each connected proxy is sent, by the kind of proxy its
//! xDS node metadata declares.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use mesh_proto::core::Node;
use mesh_proto::type_url;
use prost_types::value::Kind;
use xds::NodeFilter;

use crate::model::policies::authn::AUTHN_SCOPE_PREFIX;
use crate::model::policies::targeted::SCOPE_PREFIX;
use crate::model::waypoints::Scopes;

pub use mesh_proto::node_metadata::{DRY_RUN_AUTHORIZATION, PROXY_TYPE, WAYPOINT};

/// What the filter decides by.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filters {
    waypoints: Scopes,
    /// xDS names of dry-run policies.
    dry_run: BTreeSet<String>,
}

/// The current [`Scopes`] and dry-run policies, as an xDS [`NodeFilter`]:
/// node proxies and sidecars see everything but the dry-run policies they
/// cannot evaluate, and no L7 routes or L7 policies; a waypoint sees only
/// what it fronts and forwards to, WDS and routes alike, and the L7
/// policies that reach it (no L4 policies: its authorization is L7).
#[derive(Default)]
pub struct ProxyScopes {
    filters: RwLock<Arc<Filters>>,
}

impl ProxyScopes {
    /// Replaces the scopes and the set of dry-run policy names; true when
    /// either changed.
    pub fn update(&self, waypoints: Scopes, dry_run: BTreeSet<String>) -> bool {
        let next = Filters { waypoints, dry_run };
        let mut current = self.filters.write().unwrap_or_else(|p| p.into_inner());
        if **current == next {
            return false;
        }
        *current = Arc::new(next);
        true
    }

    fn current(&self) -> Arc<Filters> {
        self.filters.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn metadata<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

impl NodeFilter for ProxyScopes {
    fn allows(&self, node: &Node, type_url: &str, name: &str) -> bool {
        if metadata(node, PROXY_TYPE) != Some("waypoint") {
            if type_url == type_url::SERVICE_ROUTES
                || type_url == type_url::L7_AUTHORIZATION
                || type_url == type_url::L7_AUTHENTICATION
            {
                return false;
            }
            return type_url != type_url::AUTHORIZATION
                || metadata(node, DRY_RUN_AUTHORIZATION) == Some("true")
                || !self.current().dry_run.contains(name);
        }
        let Some(waypoint) = metadata(node, WAYPOINT) else {
            // A waypoint that does not say which one gets nothing.
            return false;
        };
        let filters = self.current();
        let Some(names) = filters.waypoints.get(waypoint) else { return false };
        if type_url == type_url::L7_AUTHORIZATION {
            return names.contains(&format!("{SCOPE_PREFIX}{name}"));
        }
        if type_url == type_url::L7_AUTHENTICATION {
            return names.contains(&format!("{AUTHN_SCOPE_PREFIX}{name}"));
        }
        (type_url == type_url::ADDRESS || type_url == type_url::SERVICE_ROUTES)
            && !name.starts_with(SCOPE_PREFIX)
            && !name.starts_with(AUTHN_SCOPE_PREFIX)
            && names.contains(name)
    }
}

/// Builds node metadata for a proxy (used by proxies and tests).
pub fn node_metadata(pairs: &[(&str, &str)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (k.to_string(), prost_types::Value { kind: Some(Kind::StringValue(v.to_string())) })
            })
            .collect::<BTreeMap<_, _>>(),
    }
}
