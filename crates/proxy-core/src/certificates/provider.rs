//! Where certificates come from: the mesh CA over gRPC
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use hbone::{CertificateError, CertificateRequest, TrustBundle, WorkloadCertificate};
use mesh_core::Identity;
use mesh_proto::ca::IstioCertificateRequest;
use mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::{Struct, Value, value::Kind};
use tonic::transport::Channel;

/// The metadata key naming the identity a node proxy asks for on behalf of
/// a pod (Istio's name).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Generating the key or CSR failed.
    #[error("could not build a CSR for {identity}")]
    Csr {
        /// The identity.
        identity: Identity,
        /// Why.
        #[source]
        source: CertificateError,
    },
    /// The token file could not be read.
    #[error("could not read the CA token from {path}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds something that cannot be sent as a header.
    #[error("the CA token in {0} is not a valid header value")]
    BadToken(PathBuf),
    /// The CA refused or could not be reached.
    #[error("the CA refused the certificate for {identity}: {status}")]
    Refused {
        /// The identity.
        identity: Identity,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The CA answered with a chain we cannot use (unparseable, another
    /// identity, not matching our key).
    #[error("the CA's answer for {identity} is not a usable chain")]
    BadChain {
        /// The identity.
        identity: Identity,
        /// Why.
        #[source]
        source: CertificateError,
    },
}

/// Obtains a fresh certificate for an identity.
pub trait CertificateProvider: Send + Sync + 'static {
    /// Generates a key, asks for a certificate, and returns both.
    fn fetch<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>>;
}

/// The mesh CA over gRPC, called by a node proxy on behalf of its pods.
#[derive(Debug, Clone)]
pub struct GrpcCa {
    channel: Channel,
    roots: TrustBundle,
    token_file: Option<PathBuf>,
    validity: Duration,
    impersonate: bool,
}

impl GrpcCa {
    /// A client over `channel` (TLS to the control plane). `roots` is the
    /// trust bundle put into issued certificates; `token_file`, when set, is
    /// read on every request (Kubernetes rotates projected tokens) and sent
    /// as `authorization: Bearer`. `impersonate` names the identity in
    /// `ImpersonatedIdentity` metadata, as a node proxy must.
    pub fn new(
        channel: Channel,
        roots: TrustBundle,
        token_file: Option<PathBuf>,
        validity: Duration,
        impersonate: bool,
    ) -> Self {
        Self { channel, roots, token_file, validity, impersonate }
    }

    async fn request(&self, identity: &Identity) -> Result<WorkloadCertificate, FetchError> {
        let csr = CertificateRequest::generate(identity)
            .map_err(|source| FetchError::Csr { identity: identity.clone(), source })?;
        let metadata = self.impersonate.then(|| Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_string(),
                Value { kind: Some(Kind::StringValue(identity.to_string())) },
            )]
            .into(),
        });
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.csr_pem.clone(),
            validity_duration: i64::try_from(self.validity.as_secs()).unwrap_or(i64::MAX),
            metadata,
        });
        if let Some(path) = &self.token_file {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|source| FetchError::Token { path: path.clone(), source })?;
            let value = format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| FetchError::BadToken(path.clone()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = IstioCertificateServiceClient::new(self.channel.clone())
            .create_certificate(request)
            .await
            .map_err(|status| FetchError::Refused { identity: identity.clone(), status })?
            .into_inner();
        let cert = csr
            .into_certificate(&response.cert_chain.concat(), self.roots.clone())
            .map_err(|source| FetchError::BadChain { identity: identity.clone(), source })?;
        Ok(cert)
    }
}

impl CertificateProvider for GrpcCa {
    fn fetch<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>> {
        Box::pin(self.request(identity))
    }
}
