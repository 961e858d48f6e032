//! The mesh's domain model.
//!
//! `mesh-core` holds the types every other crate talks in: today the SPIFFE
//! [`Identity`] of a workload; workloads, services and policies join as their
//! issues land. Everything here is plain data with pure functions over it.
//!
//! It deliberately does no I/O: no sockets, no tokio, no files, no clocks. That
//! keeps it usable from the control plane, every proxy and the CLI alike, and
//! lets its parsers be property-tested without any setup.

mod identity;

pub use identity::{Identity, IdentityError, Part, SPIFFE_SCHEME};
