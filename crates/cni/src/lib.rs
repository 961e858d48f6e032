//! The node agent (`mesh-cni agent`) and the chained CNI plugin (`mesh-cni`
//! when run by a container runtime).
//!
//! The agent decides which pods on its node are captured (the namespace and
//! pod labels, sidecar winning), enters each captured pod's network
//! namespace to install the redirection rules ([`rules`], [`redirect`]),
//! and hands the namespace to ztunnel over ZDS ([`agent`]). Enrollment
//! changes apply to running pods: no restart. The plugin ([`plugin`]) tells
//! the agent about new pods and refuses to let an enrolled pod start
//! uncaptured.
//!
//! It deliberately proxies nothing and holds no certificates.

pub mod agent;
pub mod desired;
pub mod install;
pub mod locate;
pub mod netns_exec;
pub mod node;
pub mod plugin;
pub mod redirect;
pub mod rules;
