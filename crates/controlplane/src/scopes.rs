//! Which resources each connected proxy is sent, by the kind of proxy its
//! xDS node metadata declares.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use mesh_proto::core::Node;
use mesh_proto::type_url;
use prost_types::value::Kind;
use xds::NodeFilter;

use crate::model::waypoints::Scopes;

/// Node metadata key: `ztunnel`, `waypoint` or `sidecar`.
pub const PROXY_TYPE: &str = "PROXY_TYPE";
/// Node metadata key of a waypoint: the Gateway it runs, `namespace/name`.
pub const WAYPOINT: &str = "WAYPOINT";

/// The current [`Scopes`], as an xDS [`NodeFilter`]: node proxies and
/// sidecars see everything; a waypoint sees only what it fronts (and no L4
/// policies: its authorization is L7, sent with its own config).
#[derive(Default)]
pub struct ProxyScopes {
    scopes: RwLock<Arc<Scopes>>,
}

impl ProxyScopes {
    /// Replaces the scopes; true when they changed.
    pub fn update(&self, scopes: Scopes) -> bool {
        let mut current = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        if **current == scopes {
            return false;
        }
        *current = Arc::new(scopes);
        true
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
            return true;
        }
        if type_url != type_url::ADDRESS {
            return false;
        }
        let Some(waypoint) = metadata(node, WAYPOINT) else {
            // A waypoint that does not say which one gets nothing.
            return false;
        };
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner()).clone();
        scopes.get(waypoint).is_some_and(|names| names.contains(name))
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
