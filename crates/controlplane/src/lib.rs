//! The mesh's control plane.
//!
//! Today: the mesh CA ([`ca`]): signing workload certificates over Istio's
//! `IstioCertificateService`, deciding who may ask for which identity, and
//! keeping the CA's key material; and [`tls`], serving gRPC over the mesh's
//! mTLS with the caller's verified identity available to handlers. Config
//! sources (Kubernetes, files), the ambient model and xDS serving join with
//! their issue.
//!
//! This is the only crate that will talk to Kubernetes. It never depends on
//! the proxies.

pub mod ca;
pub mod config;
pub mod model;
pub mod tls;
