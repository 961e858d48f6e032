//! The control-plane process: config source → model → xDS, plus the CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hbone::{CertificateRequest, TrustBundle, WorkloadCertificate};
use mesh_core::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use xds::{DeltaAdsServer, SnapshotStore};

use crate::ca::{
    Authenticator, CaConfig, CaError, CaMaterial, CaService, CertificateAuthority,
    LocalAuthenticator, MaterialError, ServingName, StaticNodeRegistry,
};
use crate::config::files::{self, Snapshot};
use crate::model::{MeshConfig, Model};

/// Audience service-account tokens must carry for the CA (as Istio's).
pub const CA_AUDIENCE: &str = "istio-ca";

/// Lifetime of the control plane's own serving certificate. It is signed by
/// our own CA at start; restart (or roll) the control plane within it.
const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Where the cluster's objects come from.
pub enum Source {
    /// A directory of YAML, checked every `poll` for changes.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// How often to look for changes.
        poll: Duration,
    },
    /// The Kubernetes API.
    Kubernetes(kube::Client),
}

/// Everything the process needs, already validated and bound.
pub struct Settings {
    /// Where objects come from.
    pub source: Source,
    /// Where the CA's key material is kept.
    pub ca_dir: PathBuf,
    /// Mesh-wide settings.
    pub mesh: MeshConfig,
    /// The control plane's own identity (its serving certificate).
    pub identity: Identity,
    /// xDS + CA over mesh TLS (15012).
    pub grpc: TcpListener,
    /// xDS in plaintext (15010), for local debugging only.
    pub plaintext: Option<TcpListener>,
    /// Per-node bootstrap tokens: (token, node). Local mode only.
    pub bootstrap_tokens: Vec<(String, String)>,
    /// (namespace, service account) node proxies run as; in a cluster,
    /// their tokens may obtain certificates for pods on their node.
    pub node_proxy_account: (String, String),
    /// The debug endpoint (15014), when enabled.
    pub admin: Option<TcpListener>,
    /// DNS names and IPs the serving certificate carries besides the
    /// SPIFFE identity ([`default_serving_names`] and the operator's).
    pub serving_names: Vec<ServingName>,
}

/// The names a control plane in `namespace` serves under by default:
/// istiod's (`istiod.istio-system.svc`, which Istio's ztunnel checks when
/// it dials an address) and its own Service's (`controlplane.<namespace>`),
/// each short and with the cluster domain.
pub fn default_serving_names(namespace: &str, cluster_domain: &str) -> Vec<ServingName> {
    let mut names = Vec::new();
    for (service, ns) in [("istiod", "istio-system"), ("controlplane", namespace)] {
        for name in [format!("{service}.{ns}.svc"), format!("{service}.{ns}.svc.{cluster_domain}")]
        {
            let name = ServingName::Dns(name);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CA's key material.
    #[error("CA key material in {origin}")]
    Material {
        /// The directory or Secret.
        origin: String,
        /// Why.
        #[source]
        source: MaterialError,
    },
    /// The CA or the serving certificate.
    #[error("could not set up the CA")]
    Ca(#[source] CaError),
    /// The serving TLS configuration.
    #[error("could not set up TLS")]
    Tls(#[source] hbone::TlsError),
    /// The serving certificate.
    #[error("could not issue the serving certificate")]
    Certificate(#[source] hbone::CertificateError),
    /// A gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Runs until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Local mode: CA files and bootstrap tokens. In a cluster: the CA
    // Secret in our namespace, and service-account tokens (TokenReview).
    let td = settings.mesh.trust_domain.clone();
    let (material, authenticator): (CaMaterial, Arc<dyn Authenticator>) = match &settings.source {
        Source::Directory { .. } => (
            CaMaterial::load_or_generate(&settings.ca_dir, &td).map_err(|source| {
                StartError::Material { origin: settings.ca_dir.display().to_string(), source }
            })?,
            Arc::new(LocalAuthenticator::new(settings.bootstrap_tokens.clone())),
        ),
        Source::Kubernetes(client) => {
            let namespace = settings.identity.namespace().to_string();
            let secrets = kube::Api::namespaced(client.clone(), &namespace);
            let material = crate::ca::kubernetes::load_or_generate_in_secret(&secrets, &td)
                .await
                .map_err(|source| StartError::Material {
                origin: format!("namespace {namespace}"),
                source,
            })?;
            let authenticator = crate::ca::kubernetes::TokenReviewAuthenticator::new(
                client.clone(),
                &td,
                vec![CA_AUDIENCE.to_string()],
                settings.node_proxy_account.clone(),
            );
            (material, Arc::new(authenticator))
        }
    };
    let ca = Arc::new(
        CertificateAuthority::new(&material, CaConfig::new(&settings.mesh.trust_domain))
            .map_err(StartError::Ca)?,
    );
    let roots = TrustBundle::from_pem(&material.root_pem).map_err(StartError::Certificate)?;
    let serving = serving_certificate(&ca, &roots, &settings.identity, &settings.serving_names)?;
    let tls =
        hbone::tls::server_config_optional_client_cert(&serving, &[]).map_err(StartError::Tls)?;

    let store = SnapshotStore::new();
    let scopes = Arc::new(crate::scopes::ProxyScopes::default());
    let ads = DeltaAdsServer::with_filter(store.clone(), scopes.clone());
    let registry = Arc::new(StaticNodeRegistry::default());
    let ca_service = CaService::new(ca, authenticator, registry.clone());

    let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let mut status_writer = None;
    match settings.source {
        Source::Directory { dir, poll } => {
            tokio::spawn(files::watch_dir(dir, poll, snapshots_tx));
        }
        Source::Kubernetes(client) => {
            let debounce = Duration::from_millis(100);
            status_writer = Some(crate::status::StatusWriter::new(client.clone()));
            tokio::spawn(crate::config::kubernetes::watch_cluster(client, debounce, snapshots_tx));
        }
    }
    // Statuses are written beside publishing, never in its way: the
    // writer takes the latest wanted statuses whenever it is free.
    let (statuses_tx, mut statuses) = watch::channel(std::collections::BTreeMap::<
        crate::status::StatusKey,
        serde_json::Value,
    >::new());
    match status_writer {
        Some(mut writer) => {
            tokio::spawn(async move {
                while statuses.changed().await.is_ok() {
                    let wanted = statuses.borrow_and_update().clone();
                    writer.write(wanted).await;
                }
            });
        }
        // No API server to write to: nobody listens, nothing is computed.
        None => drop(statuses),
    }
    let admin = crate::admin::AdminState::default();
    let publisher = Publisher {
        store,
        registry,
        scopes,
        ads: ads.clone(),
        admin: admin.clone(),
        statuses: statuses_tx,
    };
    tokio::spawn(apply_snapshots(snapshots, publisher, settings.mesh.clone()));
    if let Some(listener) = settings.admin {
        tokio::spawn(crate::admin::serve(listener, admin, ads.clone()));
    }

    let (stop_tx, stop) = watch::channel(false);
    let ads_for_shutdown = ads.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: closing xDS streams");
        ads_for_shutdown.close_streams();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };

    let grpc_addr = settings.grpc.local_addr().ok();
    let secure = tonic::transport::Server::builder()
        .add_service(ads.clone().into_service())
        .add_service(ca_service.into_service())
        .serve_with_incoming_shutdown(
            crate::tls::incoming(settings.grpc, Arc::new(tls)),
            stopped(stop.clone()),
        );
    info!(addr = ?grpc_addr, "serving xDS and CA over mesh TLS");
    match settings.plaintext {
        Some(listener) => {
            warn!(addr = ?listener.local_addr().ok(), "serving xDS in plaintext: for local debugging only");
            let plain = tonic::transport::Server::builder()
                .add_service(ads.into_service())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stopped(stop),
                );
            let (a, b) = tokio::join!(secure, plain);
            a.and(b).map_err(StartError::Serve)
        }
        None => secure.await.map_err(StartError::Serve),
    }
}

fn serving_certificate(
    ca: &CertificateAuthority,
    roots: &TrustBundle,
    identity: &Identity,
    names: &[ServingName],
) -> Result<WorkloadCertificate, StartError> {
    let request = CertificateRequest::generate(identity).map_err(StartError::Certificate)?;
    let checked = ca.check_csr(&request.csr_pem).map_err(StartError::Ca)?;
    let chain = ca.sign_serving(&checked, SERVING_CERT_LIFETIME, names).map_err(StartError::Ca)?;
    request.into_certificate(&chain.concat(), roots.clone()).map_err(StartError::Certificate)
}

/// Recomputes and publishes the model for every new snapshot.
/// Where each computed model goes.
struct Publisher {
    store: SnapshotStore,
    registry: Arc<StaticNodeRegistry>,
    scopes: Arc<crate::scopes::ProxyScopes>,
    ads: DeltaAdsServer,
    admin: crate::admin::AdminState,
    /// What each routing object's status should say (Kubernetes mode).
    statuses:
        watch::Sender<std::collections::BTreeMap<crate::status::StatusKey, serde_json::Value>>,
}

async fn apply_snapshots(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    p: Publisher,
    mesh: MeshConfig,
) {
    // Publish nothing until the source has loaded once: an empty model
    // would tell connecting proxies that the mesh is empty.
    if snapshots.changed().await.is_err() {
        return;
    }
    let (jwks_wanted, mut jwks) = crate::jwks::spawn(crate::jwks::JwksSettings::default());
    let mut snapshot = snapshots.borrow_and_update().clone();
    let mut model = Model::compute(&snapshot.state, &mesh);
    let mut previous: Option<Model> = None;
    loop {
        jwks_wanted.send_if_modified(|wanted| {
            let now = crate::model::policies::authn::jwks_uris(&snapshot.state);
            let changed = *wanted != now;
            *wanted = now;
            changed
        });
        let keys = jwks.borrow_and_update().clone();
        model.attach_authentications(&snapshot.state, &mesh, &keys);
        publish_model(&p, &snapshot, &model, previous.as_ref());
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let next = snapshots.borrow_and_update().clone();
                let updated = model.update(&snapshot.state, &next.state, &mesh);
                previous = Some(std::mem::replace(&mut model, updated));
                snapshot = next;
            }
            changed = jwks.changed() => {
                if changed.is_err() {
                    return;
                }
                // Only the keys changed: the same model, its
                // RequestAuthentications redone; everything re-encoded
                // (the store still sends proxies only what changed).
                previous = None;
            }
        }
    }
}

/// Sends one model everywhere it goes: the node registry, the proxies'
/// filters, the xDS store, the debug endpoint, the statuses.
fn publish_model(p: &Publisher, snapshot: &Snapshot, model: &Model, previous: Option<&Model>) {
    let Publisher { store, registry, scopes, ads, admin, statuses } = p;
    for w in &model.warnings {
        warn!(object = %w.object, "{}", w.message);
    }
    let mut nodes: std::collections::HashMap<String, std::collections::HashSet<Identity>> =
        Default::default();
    for w in &model.workloads {
        if !w.node.is_empty() {
            nodes.entry(w.node.clone()).or_default().insert(w.identity.clone());
        }
    }
    registry.replace(nodes);
    // Filters first: a policy turning dry-run is withdrawn from proxies
    // that would enforce it before its new version is published.
    let dry_run = crate::model::policies::dry_run_names(&model.policies);
    if scopes.update(model.waypoint_scopes.clone(), dry_run) {
        ads.refilter();
    }
    crate::push::publish(store, model, previous);
    admin.update(snapshot, model.warnings.clone(), model.enforcement.clone(), store.generation());
    if statuses.receiver_count() > 0 {
        statuses.send_replace(crate::status::statuses(
            &snapshot.state,
            &model.warnings,
            &model.enforcement,
        ));
    }
    for type_url in crate::push::TYPES {
        admin.set_resources(type_url, store.names(type_url).len());
    }
    info!(
        workloads = model.workloads.len(),
        services = model.services.len(),
        policies = model.policies.len(),
        service_routes = model.routes.by_service.len(),
        generation = store.generation(),
        "model published"
    );
}
