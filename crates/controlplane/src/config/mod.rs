//! Config sources: the Kubernetes objects the model is computed from.
//!
//! - [`objects`]: parsing documents into the kinds the model uses, with
//!   bad objects named and skipped;
//! - [`state`]: the set of objects at one moment;
//! - [`files`]: a directory of YAML, watched for changes (local mesh, CI);
//! - [`kubernetes`]: watchers on the Kubernetes API (in a cluster).

pub mod files;
pub mod istio;
pub mod kubernetes;
pub mod objects;
pub mod state;

pub use objects::{BadObject, Named, Object, ObjectRef, parse_documents};
pub use state::ClusterState;
