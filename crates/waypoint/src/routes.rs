//! The `mesh.l7.ServiceRoutes` resources the control plane sends, kept by
//! service name for the engine. A resource that does not read is NACKed
//! with the field at fault and its last good version stays in force.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use l7::ServiceRoutes;
use mesh_proto::{l7 as proto, type_url};
use prost::Message;
use xds::{Handler, Rejected, Update};

/// Routes by service resource name (`namespace/hostname`).
#[derive(Debug, Default)]
pub struct RoutesStore {
    routes: RwLock<HashMap<String, Arc<ServiceRoutes>>>,
}

impl RoutesStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The routes of one service.
    pub fn get(&self, service: &str) -> Option<Arc<ServiceRoutes>> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).get(service).cloned()
    }

    /// Every service's routes, by name.
    pub fn all(&self) -> Vec<Arc<ServiceRoutes>> {
        let mut all: Vec<_> =
            self.routes.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<ServiceRoutes>>> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies `mesh.l7.ServiceRoutes` updates.
#[derive(Debug, Clone)]
pub struct RoutesHandler(pub Arc<RoutesStore>);

impl Handler for RoutesHandler {
    fn type_url(&self) -> &str {
        type_url::SERVICE_ROUTES
    }

    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>> {
        let mut store = self.0.write();
        for name in &update.removed {
            store.remove(name);
        }
        let mut rejected = Vec::new();
        for (name, body) in update.resources {
            let parsed = proto::ServiceRoutes::decode(body.value.as_slice())
                .map_err(|e| format!("not a mesh.l7.ServiceRoutes: {e}"))
                .and_then(|p| ServiceRoutes::try_from(&p).map_err(|e| e.to_string()));
            match parsed {
                Ok(routes) if routes.key == name => {
                    store.insert(name, Arc::new(routes));
                }
                Ok(routes) => rejected.push(Rejected {
                    reason: format!("resource name does not match its content ({})", routes.key),
                    name,
                }),
                Err(reason) => {
                    tracing::warn!(resource = %name, %reason, "routes refused; the last good version stays");
                    rejected.push(Rejected { name, reason });
                }
            }
        }
        if rejected.is_empty() { Ok(()) } else { Err(rejected) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost_types::Any;

    fn any(routes: &proto::ServiceRoutes) -> Any {
        Any { type_url: type_url::SERVICE_ROUTES.into(), value: routes.encode_to_vec() }
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_version() {
        let store = RoutesStore::new();
        let mut handler = RoutesHandler(store.clone());
        let good = proto::ServiceRoutes {
            namespace: "apps".into(),
            hostname: "web.apps.svc.cluster.local".into(),
            ..Default::default()
        };
        let name = "apps/web.apps.svc.cluster.local".to_string();
        handler
            .apply(Update { resources: vec![(name.clone(), any(&good))], removed: vec![] })
            .unwrap();
        let mut bad = good.clone();
        bad.routes.push(proto::Route {
            name: "r".into(),
            r#match: Some(proto::Match {
                path: Some(proto::StringMatch {
                    kind: Some(proto::string_match::Kind::Regex("(".into())),
                }),
                ..Default::default()
            }),
            action: Some(proto::route::Action::DirectResponse(proto::DirectResponse {
                status: 200,
                body: String::new(),
            })),
            ..Default::default()
        });
        let rejected = handler
            .apply(Update { resources: vec![(name.clone(), any(&bad))], removed: vec![] })
            .unwrap_err();
        assert_eq!(rejected[0].name, name);
        assert!(
            rejected[0].reason.starts_with("routes[0].match.path.regex:"),
            "{}",
            rejected[0].reason
        );
        assert!(store.get(&name).unwrap().routes.is_empty(), "the good version stays");
        let garbage = Any { type_url: type_url::SERVICE_ROUTES.into(), value: vec![0xff, 0xff] };
        let rejected = handler
            .apply(Update { resources: vec![(name.clone(), garbage)], removed: vec![] })
            .unwrap_err();
        assert!(
            rejected[0].reason.contains("not a mesh.l7.ServiceRoutes"),
            "{}",
            rejected[0].reason
        );
        handler.apply(Update { resources: vec![], removed: vec![name.clone()] }).unwrap();
        assert!(store.get(&name).is_none());
    }
}
