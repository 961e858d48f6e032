//! Builders for tests: a mesh CA that mints certificates for any identity,
//! small servers (echo, server-speaks-first, forwarding HBONE handler), and
//! a fake Kubernetes API server (list/watch).
//!
//! A dev-dependency only: nothing here is hardened for production, and
//! panicking on a broken test fixture is the right outcome, so this crate
//! allows `unwrap`/`expect`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca;
mod ca_provider;
mod fake_api;
pub mod model;
pub mod netns;
mod servers;

pub use ca::{LeafOptions, TestCa};
pub use ca_provider::TestCaProvider;
pub use fake_api::FakeApiServer;
pub use servers::{
    ForwardingHandler, PatternSource, Sha256Stream, serve_echo, spawn_discard, spawn_echo,
    spawn_hash_sink, spawn_hbone, spawn_hbone_with, spawn_speak_first,
};
