//! The gRPC service: credentials → caller → CSR check → decision → signing.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::Identity;
use mesh_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use prost_types::value::Kind;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::auth::{self, Authenticator, Credentials, NodeRegistry};
use super::{CaError, CertificateAuthority};
use crate::tls::PeerInfo;

/// The metadata key naming the identity a node proxy asks for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// `istio.v1.auth.IstioCertificateService`.
#[derive(Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authenticator: Arc<dyn Authenticator>,
    registry: Arc<dyn NodeRegistry>,
}

impl CaService {
    /// A service signing with `ca`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authenticator: Arc<dyn Authenticator>,
        registry: Arc<dyn NodeRegistry>,
    ) -> Self {
        Self { ca, authenticator, registry }
    }

    /// The tonic service.
    pub fn into_service(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Everything but the transport: testable without gRPC.
    pub async fn create(
        &self,
        credentials: &Credentials,
        request: &IstioCertificateRequest,
    ) -> Result<Vec<String>, CaError> {
        let caller = self.authenticator.authenticate(credentials).await?;
        let csr = self.ca.check_csr(&request.csr)?;
        let impersonated = impersonated_identity(request)?;
        auth::authorize(&caller, &csr.identity, impersonated.as_ref(), self.registry.as_ref())?;
        let requested = Duration::from_secs(u64::try_from(request.validity_duration).unwrap_or(0));
        let chain = self.ca.sign(&csr, requested)?;
        info!(identity = %csr.identity, ?caller, "issued certificate");
        Ok(chain)
    }
}

/// Reads `ImpersonatedIdentity` from the request's metadata struct.
fn impersonated_identity(request: &IstioCertificateRequest) -> Result<Option<Identity>, CaError> {
    let Some(value) = request.metadata.as_ref().and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(s)) => s
            .parse()
            .map(Some)
            .map_err(|e| CaError::BadMetadata(format!("{IMPERSONATED_IDENTITY} {s:?}: {e}"))),
        _ => Err(CaError::BadMetadata(format!("{IMPERSONATED_IDENTITY} must be a string"))),
    }
}

/// Reads the caller's credentials from a gRPC request.
pub fn credentials<T>(request: &Request<T>) -> Credentials {
    let bearer_token = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let peer_identity = request.extensions().get::<PeerInfo>().and_then(|p| p.identity.clone());
    Credentials { bearer_token, peer_identity }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let credentials = credentials(&request);
        match self.create(&credentials, request.get_ref()).await {
            Ok(cert_chain) => Ok(Response::new(IstioCertificateResponse { cert_chain })),
            Err(e) => {
                warn!(error = %e, "certificate refused");
                Err(e.to_status())
            }
        }
    }
}
