//! The mesh's control plane.
//!
//! - [`config`]: the Kubernetes objects it reads (a directory of YAML,
//!   watched, or the Kubernetes API): the `mesh-config` crate, re-exported;
//! - [`model`]: the ambient model, pure: pods and services as workloads and
//!   services, AuthorizationPolicy and PeerAuthentication as L4 policies,
//!   routes and targeted AuthorizationPolicies and RequestAuthentications
//!   as waypoints' L7 config;
//! - [`jwks`]: the key sets RequestAuthentications name by `jwksUri`,
//!   fetched and refreshed;
//! - [`push`]: the model into the delta xDS store (`xds` crate), and
//!   [`scopes`]: what each kind of proxy is sent;
//! - [`ca`]: the mesh CA, over Istio's `IstioCertificateService`;
//! - [`tls`]: gRPC over the mesh's mTLS, with the caller's identity;
//! - [`admin`]: the debug endpoint (connected proxies, rejected objects,
//!   who enforces each policy);
//! - [`status`]: in Kubernetes mode, what was made of each routing and
//!   policy object, written to its `status`.
//!
//! - [`server`]: the process, wiring them together (the binary's flags are
//!   read in `src/bin/controlplane/config.rs`).
//!
//! With `mesh-config` (which the node agent shares), this is the only
//! crate that talks to Kubernetes. It never depends on the proxies.

pub mod admin;
pub mod ca;
pub use mesh_config as config;
pub mod jwks;
pub mod model;
pub mod push;
pub mod scopes;
pub mod server;
pub mod status;
pub mod tls;
