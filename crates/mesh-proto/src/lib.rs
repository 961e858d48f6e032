//! Generated Rust for the mesh's wire protocols, from `proto/`.
//!
//! Nothing here is written by hand except this module tree (which mirrors
//! the protobuf packages, as generated code refers to other packages by
//! relative path), short aliases, and the type URL constants. Conversions to
//! domain types live in `mesh-core`; servers and clients live with their
//! owners.
//!
//! Package names, message names and field numbers match Istio's and
//! Envoy's, so our components interoperate with theirs on the wire.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Every message this crate compiles, as a `FileDescriptorSet` (for
/// comparing our wire format with Istio's, `tests/istio_fields.rs`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptors.bin"));

pub mod istio {
    pub mod workload {
        tonic::include_proto!("istio.workload");
        pub mod zds {
            tonic::include_proto!("istio.workload.zds");
        }
    }
    pub mod security {
        tonic::include_proto!("istio.security");
    }
    pub mod v1 {
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// Our own resources (both ends are ours; `proto/mesh/`).
pub mod mesh {
    pub mod l7 {
        tonic::include_proto!("mesh.l7");
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

/// `envoy.config.core.v3`: the node description.
pub use envoy::config::core::v3 as core;
/// `envoy.service.discovery.v3`: aggregated discovery.
pub use envoy::service::discovery::v3 as discovery;
/// `istio.security`: L4 authorization policies.
pub use istio::security;
/// `istio.v1.auth`: the mesh CA.
pub use istio::v1::auth as ca;
/// `istio.workload`: workloads and services (WDS).
pub use istio::workload;
/// `istio.workload.zds`: node agent ↔ node proxy.
pub use istio::workload::zds;
/// `mesh.l7`: L7 routes for waypoints and sidecars.
pub use mesh::l7;

/// Well-known types, re-exported so users need no direct prost-types dependency.
pub use prost_types;

/// Keys of the xDS node metadata (`Node.metadata`) a proxy describes
/// itself with, read by the control plane: one spelling for both sides.
pub mod node_metadata {
    /// `ztunnel`, `waypoint` or `sidecar` (Istio's key and values).
    pub const PROXY_TYPE: &str = "PROXY_TYPE";
    /// The node the proxy runs on.
    pub const NODE_NAME: &str = "NODE_NAME";
    /// A waypoint's Gateway, `namespace/name`.
    pub const WAYPOINT: &str = "WAYPOINT";
    /// `"true"` from a proxy that evaluates dry-run `Authorization`s
    /// (field `dry_run`) without enforcing them. Proxies that do not say so
    /// are not sent dry-run policies: they would ignore the unknown field
    /// and enforce them.
    pub const DRY_RUN_AUTHORIZATION: &str = "DRY_RUN_AUTHORIZATION";
}

/// Type URLs of the resources served over delta ADS.
pub mod type_url {
    /// `istio.workload.Address` (workloads and services).
    pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
    /// `istio.security.Authorization` (L4 policies).
    pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
    /// `mesh.l7.ServiceRoutes` (a waypoint's routes, our own type).
    pub const SERVICE_ROUTES: &str = "type.googleapis.com/mesh.l7.ServiceRoutes";
    /// `mesh.l7.Authorization` (a waypoint's AuthorizationPolicies, our own
    /// type).
    pub const L7_AUTHORIZATION: &str = "type.googleapis.com/mesh.l7.Authorization";
    /// `mesh.l7.Authentication` (a waypoint's RequestAuthentications, our
    /// own type).
    pub const L7_AUTHENTICATION: &str = "type.googleapis.com/mesh.l7.Authentication";
}

#[cfg(test)]
mod wire_tests;
