//! The proxy's typed settings. The binary fills them from flags and
//! environment (`src/bin/ztunnel/config.rs`); tests build them directly.

use std::net::SocketAddr;
use std::time::Duration;

/// Ports ztunnel listens on inside every pod's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodPorts {
    /// Outbound capture (15001).
    pub outbound: u16,
    /// Inbound plaintext capture (15006).
    pub inbound_plaintext: u16,
    /// Inbound HBONE (15008).
    pub hbone: u16,
    /// DNS proxy (15053).
    pub dns: u16,
}

impl PodPorts {
    /// Whether `port` is one of these listeners. No connection may be sent
    /// to one of them as its destination: ztunnel would dial itself, and
    /// each hop would dial again until descriptors run out.
    pub fn is_own(&self, port: u16) -> bool {
        [self.outbound, self.inbound_plaintext, self.hbone, self.dns].contains(&port)
    }
}

impl Default for PodPorts {
    fn default() -> Self {
        Self { outbound: 15001, inbound_plaintext: 15006, hbone: 15008, dns: 15053 }
    }
}

/// DNS proxy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Whether pods get a DNS proxy on their DNS port.
    pub enabled: bool,
    /// Where names the mesh does not know are forwarded (the node's resolver).
    pub upstream: Option<SocketAddr>,
    /// How long a forwarded query may take.
    pub upstream_timeout: Duration,
    /// The cluster's DNS domain (`cluster.local`), for short names.
    pub cluster_domain: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            upstream: None,
            upstream_timeout: Duration::from_secs(5),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// How long a TLS session may be resumed after its full handshake: long
/// enough for a client that comes back every few minutes, well inside a
/// workload certificate's life (a day, renewed at half).
pub const DEFAULT_SESSION_TICKET_LIFETIME: Duration = Duration::from_secs(3600);

/// What the per-pod proxies need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Trust domain of the pods' identities.
    pub trust_domain: String,
    /// The network this node is on (empty: the default network).
    pub network: String,
    /// The cluster's id, the first part of pod workload uids
    /// (`<cluster id>//Pod/<namespace>/<name>`).
    pub cluster_id: String,
    /// Whether applications see their clients' own addresses (Istio's
    /// default): inbound connections to the application are made from the
    /// original source address, not the pod's own.
    pub preserve_source: bool,
    /// The listening ports in pods.
    pub ports: PodPorts,
    /// The HBONE port of other pods and waypoints.
    pub peer_hbone_port: u16,
    /// How long to wait for an upstream TCP connection.
    pub connect_timeout: Duration,
    /// How long open connections may finish when a pod leaves or on shutdown.
    pub drain_deadline: Duration,
    /// DNS proxy.
    pub dns: DnsConfig,
    /// Each pod's HBONE client pool; its `resume_sessions` is not read
    /// (`session_ticket_lifetime` decides).
    pub pool: hbone::PoolConfig,
    /// How long the session tickets pods' HBONE servers issue are valid;
    /// `None`: no tickets, and pods' pools do not resume sessions either
    /// (every connection does a full handshake).
    pub session_ticket_lifetime: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            network: String::new(),
            cluster_id: "Kubernetes".into(),
            preserve_source: true,
            ports: PodPorts::default(),
            peer_hbone_port: 15008,
            connect_timeout: Duration::from_secs(10),
            drain_deadline: Duration::from_secs(30),
            dns: DnsConfig::default(),
            pool: hbone::PoolConfig::default(),
            session_ticket_lifetime: Some(DEFAULT_SESSION_TICKET_LIFETIME),
        }
    }
}
