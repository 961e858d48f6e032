//! The mesh's HTTP engine, shared by the waypoint and (next) the sidecar.
//!
//! - [`config`]: a service's routes (`mesh.l7.ServiceRoutes`), checked on
//!   the way in;
//! - [`matching`]: which route a request takes;
//! - [`filters`]: header edits, rewrites, redirects;
//! - [`balance`]: endpoint choice, request limits, outlier ejection;
//! - [`clients`]: pooled upstream HTTP/1.1 and HTTP/2 connections over a
//!   transport the caller provides;
//! - [`engine`]: serving HTTP on an accepted tunnel and forwarding it, with
//!   faults, timeouts, retries, mirrors and upgrades;
//! - [`detect`]: telling HTTP from other bytes on an undeclared port;
//! - [`metrics`]: Istio's HTTP metrics;
//! - [`authz`]: `AuthorizationPolicy` for HTTP (Istio's attributes and
//!   order) and path normalisation, pure and property-tested;
//! - [`jwt`]: `RequestAuthentication`'s JWT validation;
//! - [`policies`]: the policies attached to what the proxy fronts
//!   (`mesh.l7.Authorization`), read, reduced for TCP, indexed by
//!   destination.
//!
//! It does not decide who may connect (the proxy's HBONE handler does),
//! open tunnels (a [`clients::Connector`] does) or read xDS (the proxy
//! hands it [`config::ServiceRoutes`] through [`engine::Destinations`]).

pub mod authz;
pub mod balance;
pub mod body;
pub mod clients;
pub mod config;
pub mod detect;
pub mod engine;
pub mod filters;
mod guard;
pub mod jwt;
pub mod matching;
pub mod metrics;
pub mod policies;

pub use config::{ConfigError, Protocol, ServiceRoutes};
pub use engine::{Destinations, Downstream, Engine, EngineSettings, Target};
