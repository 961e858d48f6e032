//! A Kubernetes cluster in a box, for the mesh: each node and each pod is a
//! network namespace on this host, the control plane, a node agent and a
//! ztunnel per node run as real processes, and pods' containers are
//! commands run inside their namespaces. Built from a directory of
//! Kubernetes YAML (Deployments expanded into pods); pod status (address,
//! node, phase) is written back into the control plane's file store.
//!
//! Used by `meshctl local` and the end-to-end tests. It needs root, and it
//! never sends traffic outside the namespaces it made.

pub mod cluster;
mod environment;
pub mod net;
pub mod report;
pub mod spec;

pub use cluster::{Cluster, ClusterError, NodeInfo, Options, PodInfo, State, down};
pub use spec::{ClusterSpec, SpecError};
