//! How the waypoint reaches an endpoint: an HBONE tunnel to the
//! destination pod (its node's ztunnel, or the pod itself), with the
//! waypoint's own identity and the client's address as `Forwarded`, over
//! pooled HBONE connections. A workload outside the mesh is reached over
//! plain TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{ConnectRequest, H2Stream, Pool};
use l7::balance::Endpoint;
use l7::clients::Connector;
use mesh_core::{Identity, TunnelProtocol};
use proxy_core::certificates::WorkloadCertificates;
use proxy_core::store::WorkloadStore;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Opens tunnels to endpoints.
pub struct HboneConnector {
    /// Where endpoints are.
    pub store: Arc<WorkloadStore>,
    /// The waypoint's certificates.
    pub certs: Arc<WorkloadCertificates>,
    /// The waypoint's identity.
    pub identity: Identity,
    /// HBONE connections.
    pub pool: Pool,
    /// The HBONE port of pods.
    pub hbone_port: u16,
}

impl Connector for HboneConnector {
    type Io = Either<H2Stream, TcpStream>;

    async fn connect(&self, endpoint: &Endpoint, source: SocketAddr) -> io::Result<Self::Io> {
        let workload = self
            .store
            .workload(&endpoint.uid)
            .ok_or_else(|| io::Error::other(format!("workload {} is gone", endpoint.uid)))?;
        if workload.protocol != TunnelProtocol::Hbone {
            return TcpStream::connect(endpoint.address).await.map(Either::Right);
        }
        let cert = self.certs.get(&self.identity).await.map_err(io::Error::other)?;
        let mut request = ConnectRequest::new(
            cert,
            SocketAddr::new(endpoint.address.ip(), self.hbone_port),
            vec![workload.identity.clone()],
            endpoint.address,
        );
        request.forwarded_for = Some(source);
        request.peer_proxy =
            (!workload.native_tunnel && !workload.node.is_empty()).then(|| workload.node.clone());
        self.pool.connect(&request).await.map(Either::Left).map_err(io::Error::other)
    }
}
