//! The HBONE client: pooled, multiplexed mTLS + HTTP/2 connections over
//! which each outbound connection becomes one CONNECT stream.

mod capture;
mod configs;
mod dial;
mod open;
mod pool;

use std::net::SocketAddr;

use http::StatusCode;
use mesh_core::Identity;

use crate::cert::WorkloadCertificate;
use crate::tls::TlsError;

pub use dial::{Dialer, TcpDialer};
pub use pool::{Pool, PoolConfig, PoolKey};

/// One tunnel to open.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// Who we are: the source workload's certificate.
    pub source: WorkloadCertificate,
    /// Where the HBONE server listens (a pod's or waypoint's `:15008`).
    pub hbone_addr: SocketAddr,
    /// Identities the server may prove; any other is refused.
    pub expected_identities: Vec<Identity>,
    /// The address the tunnel leads to, sent as `:authority`.
    pub target: SocketAddr,
    /// The original client, sent as `Forwarded: for="..."`.
    pub forwarded_for: Option<SocketAddr>,
    /// W3C `baggage`, passed on.
    pub baggage: Option<String>,
    /// W3C `traceparent`, passed on.
    pub traceparent: Option<String>,
    /// Names the proxy behind `hbone_addr` when one proxy serves several
    /// addresses (a node's ztunnel serves every pod on its node): a TLS
    /// session won with one of them is resumed with the others. `None`
    /// scopes sessions to `hbone_addr`. A wrong name costs only the
    /// resumption: a server that cannot read the ticket does a full
    /// handshake. Never sent on the wire.
    pub peer_proxy: Option<String>,
}

impl ConnectRequest {
    /// A tunnel from `source` through the HBONE server at `hbone_addr`
    /// (which must prove one of `expected_identities`) to `target`, with no
    /// `Forwarded`, `baggage` or `traceparent` header and sessions resumed
    /// with `hbone_addr` only; set those fields to change that.
    pub fn new(
        source: WorkloadCertificate,
        hbone_addr: SocketAddr,
        expected_identities: Vec<Identity>,
        target: SocketAddr,
    ) -> Self {
        Self {
            source,
            hbone_addr,
            expected_identities,
            target,
            forwarded_for: None,
            baggage: None,
            traceparent: None,
            peer_proxy: None,
        }
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No identity was given for the destination.
    #[error("no expected identity for {0}")]
    NoExpectedIdentity(SocketAddr),
    /// The TCP connection to the HBONE server failed.
    #[error("could not connect to {addr}")]
    Dial {
        /// The HBONE server.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong identity, untrusted root, ...).
    #[error("TLS with {addr} failed")]
    Tls {
        /// The HBONE server.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: TlsError,
    },
    /// The TLS and HTTP/2 handshakes took too long.
    #[error("handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    /// HTTP/2 failed on the connection.
    #[error("HTTP/2 with {addr} failed")]
    H2 {
        /// The HBONE server.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: h2::Error,
    },
    /// The connection failed after the tunnel's first bytes were sent, and
    /// the server may have delivered them: not retried, so they cannot
    /// arrive twice. The caller's peer should see a reset.
    #[error("connection to {addr} failed after the tunnel's first bytes were sent")]
    Interrupted {
        /// The HBONE server.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: h2::Error,
    },
    /// A header value (baggage, traceparent) cannot be sent.
    #[error("request header {0} has a value that cannot be sent")]
    BadHeader(&'static str),
    /// 401: the destination's policy refused us.
    #[error("{target} denied by policy at {addr} (401)")]
    Denied {
        /// The HBONE server.
        addr: SocketAddr,
        /// The requested target.
        target: SocketAddr,
    },
    /// 503: the destination could not reach its upstream.
    #[error("{target} unavailable behind {addr} (503)")]
    Unavailable {
        /// The HBONE server.
        addr: SocketAddr,
        /// The requested target.
        target: SocketAddr,
    },
    /// 400: the server found the request malformed.
    #[error("{addr} refused the CONNECT to {target} as malformed (400)")]
    BadRequest {
        /// The HBONE server.
        addr: SocketAddr,
        /// The requested target.
        target: SocketAddr,
    },
    /// Any other status.
    #[error("{addr} answered the CONNECT to {target} with {status}")]
    UnexpectedStatus {
        /// The HBONE server.
        addr: SocketAddr,
        /// The requested target.
        target: SocketAddr,
        /// The status.
        status: StatusCode,
    },
}
