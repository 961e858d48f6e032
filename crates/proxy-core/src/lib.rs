//! What the mesh's proxies (ztunnel, waypoint, sidecar) share.
//!
//! - [`store`]: the workload store — workloads, services and policies
//!   received over xDS, indexed for the lookups a proxy makes per connection.
//! - [`certificates`]: workload certificates obtained from the mesh CA,
//!   renewed at half their lifetime, retried with backoff.
//! - [`connections`]: every open proxied connection, for the admin endpoint
//!   and for draining on shutdown.
//! - [`sockets`]: the socket factory proxies bind and dial through, so tests
//!   bind loopback addresses and production binds inside pod namespaces.
//! - [`tcp_metrics`]: Istio's TCP metrics, names and labels as dashboards
//!   expect them.
//! - [`telemetry`]: what a connection reports (labels, the one mapping of
//!   failures to response flags, the access-log line), for every proxy.
//! - [`http`]: a tiny HTTP/1 server for admin, metrics and readiness.
//! - [`admin`]: what those endpoints share (metrics, readiness, the log
//!   level, the store's JSON in config dumps).
//! - [`process`]: what every proxy binary does around its application
//!   (addresses from flags, logging with a switchable filter, the stop signal).
//! - [`readiness`]: what a proxy still waits for before it is ready.
//! - [`errors`]: one-line error chains for logs and protocol answers.
//!
//! It deliberately holds no proxy logic: deciding where a connection goes
//! and what is allowed lives in each proxy.

pub mod admin;
pub mod certificates;
pub mod connections;
pub mod errors;
pub mod http;
pub mod process;
pub mod readiness;
pub mod sockets;
pub mod store;
pub mod tcp_metrics;
pub mod telemetry;
