//! Config sources: the Kubernetes objects the model is computed from.
//!
//! - [`objects`]: parsing documents into the kinds the model uses, with
//!   bad objects named and skipped;
//! - [`security`]: AuthorizationPolicy and PeerAuthentication read
//!   strictly, a refused one replaced by a fail-closed stand-in;
//! - [`last_valid`]: a broken edit keeps the last valid version in force;
//! - [`state`]: the set of objects at one moment;
//! - [`files`]: a directory of YAML, watched for changes (local mesh, CI);
//! - [`kubernetes`]: watchers on the Kubernetes API (in a cluster).

pub mod files;
pub mod istio;
pub mod kubernetes;
pub mod last_valid;
pub mod objects;
pub mod security;
pub mod state;

pub use objects::{BadObject, Documents, InForce, Named, Object, ObjectRef, parse_documents};
pub use state::ClusterState;
