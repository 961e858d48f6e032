//! The mesh's domain model.
//!
//! `mesh-core` holds the types every other crate talks in: SPIFFE
//! [`Identity`], [`Workload`], [`Service`], and L4 authorization
//! [`policy`] with its pure evaluation. Protobuf messages from `mesh-proto`
//! become these types at the boundary (`TryFrom`, with a [`ConvertError`]
//! naming the field that was wrong) and go back with `From`.
//!
//! It deliberately does no I/O: no sockets, no tokio, no files, no clocks.
//! That keeps it usable from the control plane, every proxy and the CLI
//! alike, and lets its parsers be property-tested without any setup.

mod address;
mod convert;
mod identity;
pub mod policy;
mod service;
mod workload;
mod xds_address;

pub use address::{
    GatewayAddress, GatewayDestination, NamespacedHostname, NetworkAddress, PortMapping,
};
pub use convert::ConvertError;
pub use identity::{Identity, IdentityError, Part, SPIFFE_SCHEME};
pub use service::{HealthPolicy, IpFamilies, LoadBalancing, LoadBalancingMode, Scope, Service};
pub use workload::{
    DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Locality, NetworkMode, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType,
};
pub use xds_address::Address;

#[cfg(test)]
mod model_tests;
