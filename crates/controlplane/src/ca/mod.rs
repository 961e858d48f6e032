//! The mesh CA: `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! - [`material`]: the CA's certificate and key, generated and kept, or
//!   provided by the user;
//! - [`authority`]: checking CSRs and signing;
//! - [`auth`]: who is calling and what they may ask for;
//! - [`kubernetes`]: TokenReview authentication and the CA Secret;
//! - [`service`]: the gRPC service tying them together.

pub mod auth;
pub mod authority;
pub mod kubernetes;
pub mod material;
pub mod service;

use mesh_core::Identity;

pub use auth::{
    Authenticator, Caller, Credentials, LocalAuthenticator, NodeRegistry, StaticNodeRegistry,
};
pub use authority::{CaConfig, CertificateAuthority, ServingName};
pub use material::{CaMaterial, MaterialError};
pub use service::CaService;

/// Why a certificate was not issued. [`CaError::to_status`] is the one
/// place these become gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// No or bad credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The CSR could not be parsed.
    #[error("CSR is malformed: {0}")]
    CsrMalformed(String),
    /// The CSR's signature does not verify with its own key.
    #[error("CSR signature does not verify")]
    CsrSignature,
    /// The CSR does not ask for exactly one valid SPIFFE identity.
    #[error("CSR must ask for exactly one spiffe:// identity: {0}")]
    CsrIdentity(String),
    /// The CSR's identity is outside the mesh's trust domain.
    #[error("{requested} is outside trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// What was asked for.
        requested: Identity,
        /// The mesh's trust domain.
        trust_domain: String,
    },
    /// A workload asked for an identity not its own.
    #[error("{caller} may not obtain a certificate for {requested}")]
    IdentityNotAllowed {
        /// Who asked.
        caller: Identity,
        /// What for.
        requested: Identity,
    },
    /// A workload tried to act for another.
    #[error("{caller} is not a node proxy and may not impersonate")]
    ImpersonationNotAllowed {
        /// Who asked.
        caller: Identity,
    },
    /// A node proxy did not say whom it asks for.
    #[error("node proxy of {node} must name the identity it requests (ImpersonatedIdentity)")]
    NodeProxyMustImpersonate {
        /// Its node.
        node: String,
    },
    /// The named identity and the CSR's differ.
    #[error("ImpersonatedIdentity {impersonated} does not match the CSR's {requested}")]
    ImpersonationMismatch {
        /// Named in metadata.
        impersonated: Identity,
        /// In the CSR.
        requested: Identity,
    },
    /// No pod with that identity runs on the proxy's node.
    #[error("no pod with identity {identity} runs on node {node}")]
    NotOnNode {
        /// The proxy's node.
        node: String,
        /// What it asked for.
        identity: Identity,
    },
    /// Request metadata is malformed.
    #[error("bad request metadata: {0}")]
    BadMetadata(String),
    /// A service the CA depends on (the Kubernetes API) failed.
    #[error("{0}")]
    Upstream(String),
    /// Signing failed (our fault, not the caller's).
    #[error("signing failed: {0}")]
    Signing(String),
    /// The CA's own key material is unusable.
    #[error("CA key material is unusable")]
    Material(#[source] MaterialError),
}

impl CaError {
    /// The gRPC status a caller receives.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        let message = self.to_string();
        match self {
            CaError::Unauthenticated(_) => Status::unauthenticated(message),
            CaError::CsrMalformed(_)
            | CaError::CsrSignature
            | CaError::CsrIdentity(_)
            | CaError::BadMetadata(_)
            | CaError::ImpersonationMismatch { .. } => Status::invalid_argument(message),
            CaError::ForeignTrustDomain { .. }
            | CaError::IdentityNotAllowed { .. }
            | CaError::ImpersonationNotAllowed { .. }
            | CaError::NodeProxyMustImpersonate { .. }
            | CaError::NotOnNode { .. } => Status::permission_denied(message),
            CaError::Upstream(_) => Status::unavailable(message),
            // Do not tell callers about our internals.
            CaError::Signing(_) | CaError::Material(_) => {
                Status::internal("certificate signing failed")
            }
        }
    }
}
