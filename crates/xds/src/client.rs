//! The delta ADS client: one stream, every registered type on it,
//! reconnecting with backoff and resuming from what it already has.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use mesh_proto::core::Node;
use mesh_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::google::rpc::Status as RpcStatus;
use prost_types::Any;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::{Backoff, WILDCARD};

/// gRPC's INVALID_ARGUMENT, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// A batch of changes for one type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Added or changed resources: (name, body).
    pub resources: Vec<(String, Any)>,
    /// Names removed.
    pub removed: Vec<String>,
}

/// A resource a handler could not accept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The resource name.
    pub name: String,
    /// Why (e.g. a conversion error).
    pub reason: String,
}

/// Applies updates of one type (e.g. converts `istio.workload.Address` into
/// the workload store).
pub trait Handler: Send + 'static {
    /// The type URL handled.
    fn type_url(&self) -> &str;

    /// Applies what it can. Returns the resources it rejected; the rest
    /// must be applied, so one bad resource does not hold back the others.
    fn apply(&mut self, update: Update) -> Result<(), Vec<Rejected>>;
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// Who we are (`node.id`, metadata).
    pub node: Node,
    /// First reconnect delay.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for XdsClientConfig {
    fn default() -> Self {
        Self {
            node: Node::default(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The stream could not be opened or broke.
    #[error("xDS stream failed: {0}")]
    Stream(#[from] tonic::Status),
    /// The server closed the stream.
    #[error("xDS server closed the stream")]
    Closed,
}

/// A delta ADS client for a set of handlers.
pub struct XdsClient {
    channel: Channel,
    config: XdsClientConfig,
    handlers: Vec<Box<dyn Handler>>,
    /// type URL → name → version we hold; survives reconnects.
    known: HashMap<String, HashMap<String, String>>,
    synced: watch::Sender<bool>,
}

impl XdsClient {
    /// A client over `channel` (which carries the TLS settings and address).
    pub fn new(channel: Channel, config: XdsClientConfig, handlers: Vec<Box<dyn Handler>>) -> Self {
        Self { channel, config, handlers, known: HashMap::new(), synced: watch::Sender::new(false) }
    }

    /// Becomes true once every type has received its first response.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Names and versions held for a type.
    pub fn known(&self, type_url: &str) -> HashMap<String, String> {
        self.known.get(type_url).cloned().unwrap_or_default()
    }

    /// Keeps a session open until `shutdown`, reconnecting with backoff.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        loop {
            let mut progressed = false;
            let result = tokio::select! {
                _ = &mut shutdown => return,
                result = self.session(&mut progressed) => result,
            };
            if progressed {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            match result {
                Ok(()) | Err(ClientError::Closed) => {
                    info!(?delay, "xDS stream closed; reconnecting")
                }
                Err(e) => warn!(error = %e, ?delay, "xDS stream failed; reconnecting"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream, until it ends. Sets `progressed` once a response arrived.
    pub async fn session(&mut self, progressed: &mut bool) -> Result<(), ClientError> {
        let (tx, rx) = mpsc::channel(self.handlers.len() + 4);
        for (i, handler) in self.handlers.iter().enumerate() {
            let type_url = handler.type_url().to_string();
            let initial = self.known.get(&type_url).cloned().unwrap_or_default();
            let request = DeltaDiscoveryRequest {
                node: (i == 0).then(|| self.config.node.clone()),
                type_url,
                resource_names_subscribe: vec![WILDCARD.to_string()],
                initial_resource_versions: initial,
                ..Default::default()
            };
            // The channel has room for every initial request.
            let _ = tx.try_send(request);
        }
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let mut responses =
            client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        let mut synced_types = std::collections::HashSet::new();
        while let Some(response) = responses.message().await? {
            *progressed = true;
            let type_url = response.type_url.clone();
            let reply = self.on_response(response);
            synced_types.insert(type_url);
            if synced_types.len() >= self.handlers.len() {
                self.synced.send_replace(true);
            }
            if tx.send(reply).await.is_err() {
                return Err(ClientError::Closed);
            }
        }
        Err(ClientError::Closed)
    }

    /// Applies one response and builds its ACK or NACK.
    fn on_response(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let type_url = response.type_url;
        let mut reply = DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: response.nonce,
            ..Default::default()
        };
        let Some(handler) = self.handlers.iter_mut().find(|h| h.type_url() == type_url) else {
            reply.error_detail = Some(nack(format!("no handler for type {type_url}")));
            return reply;
        };
        let versions: HashMap<String, String> =
            response.resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
        let update = Update {
            resources: response
                .resources
                .into_iter()
                // A resource without a body only refreshes a TTL: nothing to apply.
                .filter_map(|r| r.resource.map(|body| (r.name, body)))
                .collect(),
            removed: response.removed_resources,
        };
        let removed = update.removed.clone();
        let rejected = handler.apply(update).err().unwrap_or_default();
        let known = self.known.entry(type_url.clone()).or_default();
        for name in &removed {
            known.remove(name);
        }
        for (name, version) in versions {
            // Rejected resources are not held: after a reconnect they are
            // sent again, and may be accepted then.
            if rejected.iter().any(|r| r.name == name) {
                known.remove(&name);
            } else {
                known.insert(name, version);
            }
        }
        if !rejected.is_empty() {
            let message = rejected
                .iter()
                .map(|r| format!("{}: {}", r.name, r.reason))
                .collect::<Vec<_>>()
                .join("; ");
            warn!(%type_url, %message, "rejecting resources (NACK)");
            reply.error_detail = Some(nack(message));
        } else {
            debug!(%type_url, "ACK");
        }
        reply
    }
}

fn nack(message: String) -> RpcStatus {
    RpcStatus { code: INVALID_ARGUMENT, message, details: Vec::new() }
}
