//! The delta ADS service: one task per client stream.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_proto::core::Node;
use mesh_proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info_span, warn};

use crate::WILDCARD;
use crate::store::{Since, SnapshotStore};

/// Responses buffered per stream before the stream's task waits for the
/// client to read (backpressure instead of unbounded memory).
const STREAM_BUFFER: usize = 16;

/// Decides which resources a client may see. The control plane implements
/// it so that, say, a waypoint sees only the services it fronts.
pub trait NodeFilter: Send + Sync + 'static {
    /// Whether the client described by `node` may receive `name`.
    fn allows(&self, node: &Node, type_url: &str, name: &str) -> bool;
}

/// Every client sees everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl NodeFilter for AllowAll {
    fn allows(&self, _: &Node, _: &str, _: &str) -> bool {
        true
    }
}

/// What the server knows of one connected client, for admin endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Stream id, unique while the server runs.
    pub stream: u64,
    /// The client's `node.id`.
    pub node_id: String,
    /// Last acknowledged nonce per type URL.
    pub acked: HashMap<String, String>,
    /// NACKs received.
    pub nacks: u64,
    /// The last NACK's message.
    pub last_nack: Option<String>,
    /// Resources the client holds per type URL (as sent by us).
    pub held: HashMap<String, usize>,
}

/// The delta ADS gRPC service over a [`SnapshotStore`].
#[derive(Clone)]
pub struct DeltaAdsServer {
    store: SnapshotStore,
    filter: Arc<dyn NodeFilter>,
    clients: Arc<Mutex<HashMap<u64, ClientInfo>>>,
    next_stream: Arc<AtomicU64>,
    closing: watch::Sender<bool>,
    refilter: watch::Sender<u64>,
}

impl DeltaAdsServer {
    /// Serves `store` to every client.
    pub fn new(store: SnapshotStore) -> Self {
        Self::with_filter(store, Arc::new(AllowAll))
    }

    /// Serves `store`, each client seeing what `filter` allows.
    pub fn with_filter(store: SnapshotStore, filter: Arc<dyn NodeFilter>) -> Self {
        Self {
            store,
            filter,
            clients: Arc::default(),
            next_stream: Arc::new(AtomicU64::new(1)),
            closing: watch::Sender::new(false),
            refilter: watch::Sender::new(0),
        }
    }

    /// Tells every stream that the filter's answers may have changed, so
    /// each compares all it holds against what it may now see (resources
    /// that did not change themselves but became visible or hidden).
    pub fn refilter(&self) {
        self.refilter.send_modify(|n| *n += 1);
    }

    /// Ends every open stream (clients reconnect, possibly elsewhere) and
    /// refuses new ones. gRPC graceful shutdown waits for streams to end;
    /// ADS streams never end by themselves, so call this first.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Clients connected now.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = clients.values().cloned().collect();
        list.sort_by_key(|c| c.stream);
        list
    }

    /// The tonic service, ready to add to a server.
    pub fn into_service(
        self,
    ) -> mesh_proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer<Self>
    {
        mesh_proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
type SotwStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for DeltaAdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(Status::unimplemented(
            "state-of-the-world ADS is not served; use DeltaAggregatedResources",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        if *self.closing.borrow() {
            return Err(Status::unavailable("control plane is shutting down"));
        }
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = ClientStream {
            id,
            store: self.store.clone(),
            filter: self.filter.clone(),
            clients: self.clients.clone(),
            node: Node::default(),
            subs: HashMap::new(),
            nonce: 0,
            tx,
        };
        let requests = request.into_inner();
        let closing = self.closing.subscribe();
        let refilter = self.refilter.subscribe();
        tokio::spawn(
            stream.run(requests, closing, refilter).instrument(info_span!("xds_stream", id)),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What one client subscribed to for one type, and what it holds.
#[derive(Default)]
struct Subscription {
    wildcard: bool,
    names: HashSet<String>,
    /// name → version the client holds (as sent by us or declared by it).
    held: HashMap<String, String>,
    /// Store generation this subscription is up to date with.
    seen: u64,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct ClientStream {
    id: u64,
    store: SnapshotStore,
    filter: Arc<dyn NodeFilter>,
    clients: Arc<Mutex<HashMap<u64, ClientInfo>>>,
    node: Node,
    subs: HashMap<String, Subscription>,
    nonce: u64,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

/// The stream ended; why is logged where it happened.
struct Closed;

impl ClientStream {
    async fn run(
        mut self,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        mut closing: watch::Receiver<bool>,
        mut refilter: watch::Receiver<u64>,
    ) {
        let mut generations: watch::Receiver<u64> = self.store.subscribe();
        self.registry(|_| {});
        loop {
            let result = tokio::select! {
                // (In a block so the watch guard is dropped before we await.)
                _ = async { drop(closing.wait_for(|closing| *closing).await) } => {
                    debug!("closing the stream: server shutting down");
                    let _ = self.tx.send(Err(Status::unavailable("control plane is shutting down"))).await;
                    Err(Closed)
                }
                request = requests.message() => match request {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => {
                        debug!("client closed the stream");
                        Err(Closed)
                    }
                    Err(status) => {
                        debug!(%status, "stream failed");
                        Err(Closed)
                    }
                },
                changed = generations.changed() => match changed {
                    Ok(()) => self.on_store_change().await,
                    Err(_) => Err(Closed),
                },
                changed = refilter.changed() => match changed {
                    Ok(()) => self.on_refilter().await,
                    Err(_) => Err(Closed),
                },
            };
            if result.is_err() {
                break;
            }
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.remove(&self.id);
    }

    fn registry(&self, update: impl FnOnce(&mut ClientInfo)) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let info = clients
            .entry(self.id)
            .or_insert_with(|| ClientInfo { stream: self.id, ..ClientInfo::default() });
        info.node_id.clone_from(&self.node.id);
        update(info);
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Closed> {
        if let Some(node) = request.node {
            self.node = node;
        }
        let type_url = request.type_url;
        if type_url.is_empty() {
            let _ = self.tx.send(Err(Status::invalid_argument("type_url is required"))).await;
            return Err(Closed);
        }
        if !request.response_nonce.is_empty() {
            match &request.error_detail {
                Some(status) => {
                    warn!(node = %self.node.id, %type_url, nonce = %request.response_nonce,
                        error = %status.message, "client rejected resources (NACK)");
                    let message = status.message.clone();
                    self.registry(|info| {
                        info.nacks += 1;
                        info.last_nack = Some(message);
                    });
                }
                None => {
                    let nonce = request.response_nonce.clone();
                    let t = type_url.clone();
                    self.registry(|info| {
                        info.acked.insert(t, nonce);
                    });
                }
            }
        }
        let first = !self.subs.contains_key(&type_url);
        let sub = self.subs.entry(type_url.clone()).or_default();
        if first {
            sub.held = request.initial_resource_versions;
        }
        let mut new_interest = first;
        for name in request.resource_names_subscribe {
            if name == WILDCARD {
                new_interest |= !sub.wildcard;
                sub.wildcard = true;
            } else {
                new_interest |= sub.names.insert(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == WILDCARD {
                sub.wildcard = false;
            } else {
                sub.names.remove(&name);
            }
            // Unsubscribed resources are forgotten, not removed: the client
            // dropped them itself.
            sub.held.remove(&name);
        }
        if first && !sub.wildcard && sub.names.is_empty() {
            // A first request naming nothing subscribes to everything
            // (implicit wildcard, as the xDS protocol defines).
            sub.wildcard = true;
        }
        if new_interest {
            // A client that holds nothing of this type gets an answer even
            // when there is nothing to send: that empty response is how it
            // learns it is up to date (and may report ready).
            let announce_empty = first && sub.held.is_empty();
            self.push_with(&type_url, Since::Everything, announce_empty).await?;
        }
        Ok(())
    }

    async fn on_store_change(&mut self) -> Result<(), Closed> {
        let types: Vec<(String, u64)> =
            self.subs.iter().map(|(t, s)| (t.clone(), s.seen)).collect();
        for (type_url, seen) in types {
            let since = self.store.changed_since(&type_url, seen);
            self.push(&type_url, since).await?;
        }
        Ok(())
    }

    async fn on_refilter(&mut self) -> Result<(), Closed> {
        let types: Vec<String> = self.subs.keys().cloned().collect();
        for type_url in types {
            self.push(&type_url, Since::Everything).await?;
        }
        Ok(())
    }

    /// Sends what the client lacks among `candidates`, and removals.
    async fn push(&mut self, type_url: &str, candidates: Since) -> Result<(), Closed> {
        self.push_with(type_url, candidates, false).await
    }

    async fn push_with(
        &mut self,
        type_url: &str,
        candidates: Since,
        even_if_empty: bool,
    ) -> Result<(), Closed> {
        let Some(sub) = self.subs.get_mut(type_url) else {
            return Ok(());
        };
        // Read the generation first: anything changed after this point is
        // looked at again on the next wake-up, so nothing is missed.
        let generation = self.store.generation();
        let names: Vec<String> = match candidates {
            Since::Names(names) => names,
            Since::Everything => {
                let mut all: HashSet<String> =
                    self.store.all(type_url).into_iter().map(|(n, _)| n).collect();
                all.extend(sub.held.keys().cloned());
                all.extend(sub.names.iter().cloned());
                all.into_iter().collect()
            }
        };
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let mut done = HashSet::new();
        for name in names {
            if !done.insert(name.clone()) {
                continue;
            }
            let visible = sub.wants(&name) && self.filter.allows(&self.node, type_url, &name);
            match (visible.then(|| self.store.get(type_url, &name)).flatten(), sub.held.get(&name))
            {
                (Some(entry), held) if held != Some(&entry.version) => {
                    sub.held.insert(name.clone(), entry.version.clone());
                    resources.push(Resource {
                        name,
                        version: entry.version.clone(),
                        resource: Some(entry.body.clone()),
                        ..Resource::default()
                    });
                }
                (Some(_), _) => {}
                (None, Some(_)) => {
                    sub.held.remove(&name);
                    removed.push(name);
                }
                (None, None) => {}
            }
        }
        sub.seen = generation;
        if resources.is_empty() && removed.is_empty() && !even_if_empty {
            return Ok(());
        }
        let held = sub.held.len();
        self.registry(|info| {
            info.held.insert(type_url.to_string(), held);
        });
        self.nonce += 1;
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        removed.sort();
        let response = DeltaDiscoveryResponse {
            system_version_info: generation.to_string(),
            resources,
            type_url: type_url.to_string(),
            nonce: self.nonce.to_string(),
            removed_resources: removed,
            control_plane: None,
        };
        debug!(
            type_url,
            nonce = self.nonce,
            resources = response.resources.len(),
            removed = response.removed_resources.len(),
            "push"
        );
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}
