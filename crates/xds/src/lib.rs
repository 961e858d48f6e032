//! Delta aggregated discovery (delta ADS), generic over resource types.
//!
//! - [`SnapshotStore`]: the server's in-memory resources, per type URL, with
//!   content-derived versions and a change log so pushes touch only what
//!   changed;
//! - [`DeltaAdsServer`]: the tonic service (`envoy.service.discovery.v3.
//!   AggregatedDiscoveryService/DeltaAggregatedResources`): tracks each
//!   client's subscriptions and the versions it holds, sends only changed and
//!   removed resources, reads ACKs and NACKs by nonce;
//! - [`XdsClient`]: subscribes, hands updates to typed [`Handler`]s, ACKs or
//!   NACKs with their errors, reconnects with backoff and resumes with
//!   `initial_resource_versions`.
//!
//! - [`tls_channel`]: a gRPC channel to the control plane over mesh TLS.
//!
//! It knows nothing of what the resources mean: conversion to domain types
//! is the handlers' job (proxy-core), and deciding what each proxy may see is
//! the control plane's ([`NodeFilter`]).

mod backoff;
mod channel;
mod client;
mod server;
mod store;

pub use backoff::Backoff;
pub use channel::{plaintext_channel, tls_channel};
pub use client::{ClientError, Handler, Rejected, Update, XdsClient, XdsClientConfig};
pub use server::{AllowAll, ClientInfo, DeltaAdsServer, NodeFilter};
pub use store::{Change, SnapshotStore};

/// The wildcard subscription: every resource of the type.
pub const WILDCARD: &str = "*";
