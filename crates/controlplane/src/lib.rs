//! The mesh's control plane.
//!
//! - [`config`]: the Kubernetes objects it reads (today from a directory of
//!   YAML, watched), bad objects named and skipped;
//! - [`model`]: the ambient model, pure: pods and services as workloads and
//!   services, AuthorizationPolicy and PeerAuthentication as L4 policies;
//! - [`push`]: the model into the delta xDS store (`xds` crate), and
//!   [`scopes`]: what each kind of proxy is sent;
//! - [`ca`]: the mesh CA, over Istio's `IstioCertificateService`;
//! - [`tls`]: gRPC over the mesh's mTLS, with the caller's identity;
//! - [`admin`]: the debug endpoint (connected proxies, rejected objects).
//!
//! - [`server`]: the process, wiring them together (the binary's flags are
//!   read in `src/bin/controlplane/config.rs`).
//!
//! This is the only crate that will talk to Kubernetes. It never depends on
//! the proxies.

pub mod admin;
pub mod ca;
pub mod config;
pub mod model;
pub mod push;
pub mod scopes;
pub mod server;
pub mod tls;
