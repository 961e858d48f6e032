//! The L4 decisions the mesh's proxies share: ztunnel today, the sidecar
//! next (see ARCHITECTURE.md). Each is pure, plain data in and a
//! decision out, tested without sockets; the proxies do the I/O.
//!
//! - [`plan`]: where an outbound connection goes (a service's endpoint by
//!   its load-balancing rules, a waypoint, the pod itself, or passthrough).
//! - [`authorize`]: whether an inbound connection may reach its pod (known
//!   destination, waypoint binding, L4 policy, dry runs logged), and which
//!   source address to trust.
//! - [`service`]: which service an inbound connection addressed (telemetry).
//!
//! `proxy-core` holds no such decisions, only the shared machinery.

pub mod authorize;
pub mod plan;
pub mod service;
