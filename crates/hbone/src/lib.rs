//! HBONE: the mesh's tunnel. HTTP/2 `CONNECT` streams over mutual TLS 1.3,
//! with peers identified by SPIFFE identities.
//!
//! - [`accept`]: the one accept loop every listener of the mesh uses
//!   (pausing on errors such as `EMFILE`);
//! - [`cert`]: keys, CSRs, certificate chains, reading identities out of them;
//! - [`tls`]: rustls configurations that check SPIFFE identities, and the one
//!   place TLS failures are classified;
//! - [`client`]: a pool of multiplexed connections opening tunnels;
//! - [`server`]: accepting tunnels and asking a [`server::ConnectHandler`]
//!   what each one gets;
//! - [`stream::H2Stream`]: a tunnel as `AsyncRead + AsyncWrite`, half-close
//!   included;
//! - [`splice`]: joining a tunnel and a socket both ways without copying
//!   bytes in user space.
//!
//! This crate knows nothing of xDS, Kubernetes or policy: who may connect to
//! what is the handler's business, and which identities a destination may
//! have is the caller's.

pub mod accept;
pub mod authority;
pub mod cert;
pub mod client;
mod coalesce;
mod keepalive;
pub mod server;
pub mod settings;
pub mod splice;
pub mod stream;
mod sync;
#[cfg(test)]
mod test_certs;
pub mod tls;

pub use cert::{CertificateError, CertificateRequest, TrustBundle, WorkloadCertificate};
pub use client::{ConnectError, ConnectRequest, Pool, PoolConfig, TcpDialer};
pub use server::{ConnectHandler, HboneServer, InboundConnect, ServeError, Tunnel, Verdict};
pub use settings::H2Settings;
pub use splice::{ChunkIo, splice};
pub use stream::H2Stream;
pub use tls::TlsError;

/// The port HBONE servers listen on.
pub const HBONE_PORT: u16 = 15008;
