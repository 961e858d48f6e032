//! Who is calling the CA, and what they may ask for.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use mesh_core::Identity;

use super::CaError;

/// What a caller presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// The identity of the mesh certificate the caller connected with.
    pub peer_identity: Option<Identity>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A workload that proved its own identity.
    Workload(Identity),
    /// The node proxy (ztunnel) of one node.
    NodeProxy {
        /// The node.
        node: String,
    },
}

/// Establishes who is calling.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the credentials. Asynchronous because checking a Kubernetes
    /// token asks the API server.
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, CaError>> + Send + 'a>>;
}

/// Knows which identities have pods on which node.
pub trait NodeRegistry: Send + Sync + 'static {
    /// Whether a pod with `identity` runs on `node`.
    fn runs_on(&self, node: &str, identity: &Identity) -> bool;
}

/// Local mode: node proxies present a per-node bootstrap token; workloads
/// present their existing mesh certificate.
pub struct LocalAuthenticator {
    /// token → node.
    node_tokens: Vec<(String, String)>,
}

impl LocalAuthenticator {
    /// Trusts these `(token, node)` pairs.
    pub fn new(node_tokens: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { node_tokens: node_tokens.into_iter().collect() }
    }
}

impl Authenticator for LocalAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, CaError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(token) = &credentials.bearer_token {
                // Compare digests, and all of them: how long a refusal takes
                // must not tell how much of a token was right.
                let digest = |t: &str| ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
                let presented = digest(token);
                let mut found = None;
                for (known, node) in &self.node_tokens {
                    if digest(known).as_ref() == presented.as_ref() {
                        found = Some(node.clone());
                    }
                }
                return found
                    .map(|node| Caller::NodeProxy { node })
                    .ok_or_else(|| CaError::Unauthenticated("unknown bootstrap token".into()));
            }
            match &credentials.peer_identity {
                Some(identity) => Ok(Caller::Workload(identity.clone())),
                None => Err(CaError::Unauthenticated(
                    "no credentials: present a mesh certificate or a bearer token".into(),
                )),
            }
        })
    }
}

/// A registry filled by hand (local mode, tests); the control plane's model
/// implements [`NodeRegistry`] from pods in a cluster.
#[derive(Default)]
pub struct StaticNodeRegistry {
    nodes: RwLock<HashMap<String, HashSet<Identity>>>,
}

impl StaticNodeRegistry {
    /// Records that a pod with `identity` runs on `node`.
    pub fn add(&self, node: &str, identity: Identity) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node.to_string()).or_default().insert(identity);
    }

    /// Replaces everything known with `nodes` (node → identities).
    pub fn replace(&self, nodes: HashMap<String, HashSet<Identity>>) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// Forgets `identity` on `node`.
    pub fn remove(&self, node: &str, identity: &Identity) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = nodes.get_mut(node) {
            ids.remove(identity);
        }
    }
}

impl NodeRegistry for StaticNodeRegistry {
    fn runs_on(&self, node: &str, identity: &Identity) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

/// Decides whether `caller` may obtain a certificate for `requested`.
///
/// - A workload may ask for its own identity, and only that.
/// - A node proxy must name the identity it asks for (the
///   `ImpersonatedIdentity` metadata), which must be the CSR's, and a pod
///   with that identity must run on the proxy's node.
pub fn authorize(
    caller: &Caller,
    requested: &Identity,
    impersonated: Option<&Identity>,
    registry: &dyn NodeRegistry,
) -> Result<(), CaError> {
    match (caller, impersonated) {
        (Caller::Workload(own), None) if own == requested => Ok(()),
        (Caller::Workload(own), None) => {
            Err(CaError::IdentityNotAllowed { caller: own.clone(), requested: requested.clone() })
        }
        (Caller::Workload(own), Some(_)) => {
            Err(CaError::ImpersonationNotAllowed { caller: own.clone() })
        }
        (Caller::NodeProxy { node }, None) => {
            Err(CaError::NodeProxyMustImpersonate { node: node.clone() })
        }
        (Caller::NodeProxy { .. }, Some(named)) if named != requested => {
            Err(CaError::ImpersonationMismatch {
                impersonated: named.clone(),
                requested: requested.clone(),
            })
        }
        (Caller::NodeProxy { node }, Some(named)) if !registry.runs_on(node, named) => {
            Err(CaError::NotOnNode { node: node.clone(), identity: named.clone() })
        }
        (Caller::NodeProxy { .. }, Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "ns", sa).unwrap()
    }

    #[test]
    fn decisions() {
        let registry = StaticNodeRegistry::default();
        registry.add("node-a", id("on-a"));
        let workload = Caller::Workload(id("me"));
        let proxy_a = Caller::NodeProxy { node: "node-a".into() };
        let proxy_b = Caller::NodeProxy { node: "node-b".into() };

        assert!(authorize(&workload, &id("me"), None, &registry).is_ok());
        assert!(matches!(
            authorize(&workload, &id("other"), None, &registry),
            Err(CaError::IdentityNotAllowed { .. })
        ));
        assert!(matches!(
            authorize(&workload, &id("me"), Some(&id("me")), &registry),
            Err(CaError::ImpersonationNotAllowed { .. })
        ));
        assert!(authorize(&proxy_a, &id("on-a"), Some(&id("on-a")), &registry).is_ok());
        assert!(matches!(
            authorize(&proxy_b, &id("on-a"), Some(&id("on-a")), &registry),
            Err(CaError::NotOnNode { .. })
        ));
        assert!(matches!(
            authorize(&proxy_a, &id("on-a"), None, &registry),
            Err(CaError::NodeProxyMustImpersonate { .. })
        ));
        assert!(matches!(
            authorize(&proxy_a, &id("other"), Some(&id("on-a")), &registry),
            Err(CaError::ImpersonationMismatch { .. })
        ));
        registry.remove("node-a", &id("on-a"));
        assert!(matches!(
            authorize(&proxy_a, &id("on-a"), Some(&id("on-a")), &registry),
            Err(CaError::NotOnNode { .. })
        ));
    }
}
