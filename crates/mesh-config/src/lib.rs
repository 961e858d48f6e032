//! Config sources: the Kubernetes objects the mesh is computed from, read
//! the same way by the control plane and by each node agent, and the rule
//! of who is enrolled in the mesh.
//!
//! - [`objects`]: parsing documents into the kinds the model uses, with
//!   bad objects named and skipped;
//! - [`security`]: AuthorizationPolicy and PeerAuthentication read
//!   strictly, a refused one replaced by a fail-closed stand-in;
//! - [`routing`]: HTTPRoute, VirtualService and DestinationRule, keeping
//!   the fields we do not apply so they can be reported;
//! - [`last_valid`]: a broken edit keeps the last valid version in force;
//! - [`state`]: the set of objects at one moment;
//! - [`files`]: a directory of YAML, watched for changes (local mesh, CI);
//! - [`kubernetes`]: watchers on the Kubernetes API (in a cluster), for
//!   every kind (the control plane) or a node's own (a node agent);
//! - [`enrollment`]: which pods the mesh captures, and how.
//!
//! It deliberately holds no model, no xDS and no CA: a node agent links it
//! to know its pods without linking the control plane.

pub mod enrollment;
pub mod files;
pub mod istio;
pub mod kubernetes;
pub mod last_valid;
pub mod objects;
pub mod routing;
pub mod security;
pub mod state;

pub use objects::{BadObject, Documents, InForce, Named, Object, ObjectRef, parse_documents};
pub use state::ClusterState;
