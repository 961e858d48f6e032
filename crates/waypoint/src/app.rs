//! The whole waypoint assembled: xDS (its services and workloads, and its
//! routes), its certificate from the mesh CA, HBONE on 15008, and the
//! admin, metrics and readiness endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hbone::TrustBundle;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use l7::EngineSettings;
use mesh_core::Identity;
use mesh_proto::core::Node;
use mesh_proto::node_metadata;
use prometheus_client::registry::Registry;
use prost_types::{Struct, Value, value::Kind};
use proxy_core::admin::{SetLogLevel, service_json, set_log_level, workload_json};
use proxy_core::certificates::{CertificateSettings, GrpcCa, WorkloadCertificates};
use proxy_core::http::{Body, Route, json, text};
use proxy_core::readiness::Readiness;
use proxy_core::store::{AddressHandler, WorkloadStore};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xds::{XdsClient, XdsClientConfig};

use crate::inbound::WaypointName;
use crate::policies::{AuthenticationHandler, PolicyHandler, PolicyStore};
use crate::routes::{RoutesHandler, RoutesStore};
use crate::{Parts, Waypoint};

/// Where the control plane is and how it is trusted.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// xDS address.
    pub xds: SocketAddr,
    /// CA address.
    pub ca: SocketAddr,
    /// The identity it must prove.
    pub identity: Identity,
    /// The mesh's roots.
    pub roots: TrustBundle,
    /// Bearer token for the CA.
    pub token_file: Option<PathBuf>,
    /// Name our identity in `ImpersonatedIdentity` (the local mesh, where
    /// the waypoint presents its node's token).
    pub impersonate: bool,
    /// Requested certificate lifetime.
    pub cert_lifetime: Duration,
}

/// Everything the binary decides.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Which waypoint.
    pub me: WaypointName,
    /// Its identity.
    pub identity: Identity,
    /// The network.
    pub network: String,
    /// Pods' HBONE port.
    pub hbone_port: u16,
    /// The control plane.
    pub control_plane: ControlPlaneConfig,
    /// Engine limits.
    pub settings: EngineSettings,
    /// Coalesce small HBONE writes (`Parts::coalesce_writes`).
    pub coalesce_writes: bool,
}

/// The bound listeners.
#[derive(Debug)]
pub struct AppListeners {
    /// 15008.
    pub hbone: TcpListener,
    /// Admin.
    pub admin: TcpListener,
    /// Prometheus.
    pub metrics: TcpListener,
    /// Readiness.
    pub readiness: TcpListener,
}

/// Why the waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The TLS configuration for the control plane could not be built.
    #[error("cannot build the TLS configuration for the control plane")]
    Tls(#[source] hbone::TlsError),
}

fn string(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}

/// Runs until `shutdown`.
pub async fn run(
    config: AppConfig,
    listeners: AppListeners,
    set_log_level: Option<SetLogLevel>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let cp = &config.control_plane;
    let tls = hbone::tls::client_config_without_cert(&cp.roots, std::slice::from_ref(&cp.identity))
        .map_err(AppError::Tls)?;
    let readiness = Readiness::new();
    let xds_ready = readiness.block("xds");
    let store = WorkloadStore::new();
    let routes = RoutesStore::new();
    let gateway = format!("{}/{}", config.me.namespace, config.me.name);
    let policies = PolicyStore::new(&gateway);
    let node = Node {
        id: format!("waypoint~{gateway}"),
        metadata: Some(Struct {
            fields: [
                (node_metadata::PROXY_TYPE.to_string(), string("waypoint")),
                (node_metadata::WAYPOINT.to_string(), string(&gateway)),
            ]
            .into(),
        }),
        ..Default::default()
    };
    let xds_client = XdsClient::new(
        xds::tls_channel(cp.xds, tls.clone()),
        XdsClientConfig { node, ..Default::default() },
        vec![
            Box::new(AddressHandler(store.clone())),
            Box::new(RoutesHandler(routes.clone())),
            Box::new(PolicyHandler(policies.clone())),
            Box::new(AuthenticationHandler(policies.clone())),
        ],
    );
    proxy_core::admin::run_xds(xds_client, xds_ready, &shutdown);

    let provider = GrpcCa::new(
        xds::tls_channel(cp.ca, tls),
        cp.roots.clone(),
        cp.token_file.clone(),
        cp.cert_lifetime,
        cp.impersonate,
    );
    let certs = WorkloadCertificates::new(Arc::new(provider), CertificateSettings::default());
    let mut registry = Registry::default();
    let waypoint = Waypoint::new(
        Parts {
            me: config.me.clone(),
            identity: config.identity.clone(),
            network: config.network.clone(),
            hbone_port: config.hbone_port,
            store,
            routes: routes.clone(),
            policies: policies.clone(),
            certs: certs.clone(),
            settings: config.settings.clone(),
            coalesce_writes: config.coalesce_writes,
        },
        &mut registry,
    );
    let cert_ready = readiness.block("certificate");
    tokio::spawn({
        let certs = certs.clone();
        let identity = config.identity.clone();
        async move {
            if let Some(mut rx) = certs.watch(&identity)
                && rx.wait_for(|s| s.current.is_some()).await.is_ok()
            {
                drop(cert_ready);
            }
        }
    });
    let endpoints = proxy_core::admin::Endpoints {
        admin: listeners.admin,
        metrics: listeners.metrics,
        readiness: listeners.readiness,
    };
    let admin =
        Arc::new(AdminRoute { waypoint: waypoint.clone(), routes, policies, set_log_level });
    proxy_core::admin::serve_endpoints(endpoints, admin, registry, readiness, &shutdown);
    waypoint.serve_hbone(listeners.hbone, shutdown.clone()).await;
    shutdown.cancelled().await;
    Ok(())
}

/// `localhost:15000`: what the waypoint knows.
struct AdminRoute {
    waypoint: Arc<Waypoint>,
    routes: Arc<RoutesStore>,
    policies: Arc<PolicyStore>,
    set_log_level: Option<SetLogLevel>,
}

impl AdminRoute {
    fn config_dump(&self) -> serde_json::Value {
        let store = &self.waypoint.engine.destinations().store;
        json!({
            "waypoint": {
                "namespace": self.waypoint.me.namespace,
                "name": self.waypoint.me.name,
                "identity": self.waypoint.identity.to_string(),
            },
            "workloads": store.workloads().iter().map(|w| workload_json(w)).collect::<Vec<_>>(),
            "services": store.services().iter().map(|s| service_json(s)).collect::<Vec<_>>(),
            "routes": self.routes.all().iter().map(|r| routes_json(r)).collect::<Vec<_>>(),
            "policies": self.policies.all().iter().map(|(name, p)| json!({
                "name": name,
                "action": format!("{:?}", p.http.action).to_uppercase(),
                "rules": p.http.rules.len(),
                "waypoints": p.waypoints,
                "services": p.services,
                "dryRun": p.dry_run,
            })).collect::<Vec<_>>(),
            "authentications": self.policies.authentications().iter().map(|a| json!({
                "name": a.name,
                "issuers": a.rules.iter().map(|r| r.issuer.as_str()).collect::<Vec<_>>(),
                "waypoints": a.waypoints,
                "services": a.services,
            })).collect::<Vec<_>>(),
        })
    }
}

/// One service's routes, as `meshctl proxy-config routes` shows them.
pub fn routes_json(r: &l7::ServiceRoutes) -> serde_json::Value {
    json!({
        "service": r.key,
        "ports": r.ports.iter().map(|(p, proto)| json!({"port": p, "protocol": format!("{proto:?}")})).collect::<Vec<_>>(),
        "routes": r.routes.iter().map(|route| json!({
            "name": route.name,
            "match": format!("{:?}", route.matcher),
            "action": match &route.action {
                l7::config::Action::Forward(f) => json!({"forward": f.backends.iter().map(|b| json!({
                    "service": b.service, "port": b.port, "subset": b.subset, "weight": b.weight,
                })).collect::<Vec<_>>(), "timeout": f.timeout.map(|t| t.as_secs_f64()),
                "retries": f.retry.as_ref().map(|r| r.attempts)}),
                l7::config::Action::Redirect(rd) => json!({"redirect": rd.status.as_u16()}),
                l7::config::Action::Direct { status, .. } => json!({"direct": status.as_u16()}),
            },
        })).collect::<Vec<_>>(),
        "subsets": r.subsets.iter().map(|s| json!({"name": s.name, "workloads": s.workloads})).collect::<Vec<_>>(),
        "loadBalancer": format!("{:?}", r.traffic_policy.load_balancer),
    })
}

impl Route for AdminRoute {
    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/config_dump") => json(&self.config_dump()),
            (&Method::POST, "/logging") => set_log_level(&request, self.set_log_level.as_ref()),
            (_, "/") => text(StatusCode::OK, "GET /config_dump\nPOST /logging?level=<filter>\n"),
            _ => text(StatusCode::NOT_FOUND, "not found; see /\n"),
        }
    }
}
