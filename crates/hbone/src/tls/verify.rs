//! Certificate verifiers that check SPIFFE identities instead of DNS names.
//!
//! Mesh peers are addressed by IP and authenticated by the `spiffe://` URI
//! in their certificate, so the stock WebPKI verifiers only do half the job:
//! they check the chain, but know nothing of identities. These wrap them.

use std::sync::Arc;

use mesh_core::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::verified::{ChainKey, Usage, VerifiedChains};
use crate::cert::identity_of;

/// Why an otherwise valid chain was refused. Carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))` and
/// recovered by [`super::TlsError::from_rustls`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdentityRefusal {
    /// The server is not one of the identities expected for the destination.
    #[error("peer is {found}, expected one of [{}]", list(expected))]
    Unexpected {
        /// Who was expected.
        expected: Vec<Identity>,
        /// Who answered.
        found: Identity,
    },
    /// The client's identity belongs to a trust domain we do not accept.
    #[error("peer {found} is outside the trust domains [{}]", allowed.join(", "))]
    ForeignTrustDomain {
        /// Who connected.
        found: Identity,
        /// Trust domains we accept.
        allowed: Vec<String>,
    },
    /// The certificate carries no usable SPIFFE identity.
    #[error("peer certificate has no usable identity: {0}")]
    NoIdentity(String),
}

fn list(ids: &[Identity]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn refuse(refusal: IdentityRefusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(refusal),
    )))
}

/// Client side: the server must chain to our roots AND be one of the
/// identities expected for this destination. The server name is ignored:
/// mesh destinations are IPs, their names are their SPIFFE identities.
/// A chain verified before against the same roots is not verified again
/// while its validity lasts (see [`super::verified`]); the identity check
/// and the handshake signature are done every time.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    verified: Arc<VerifiedChains>,
    expected: Vec<Identity>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        verified: Arc<VerifiedChains>,
        expected: Vec<Identity>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self { roots, verified, expected, algorithms }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ChainKey::new(Usage::Server, end_entity, intermediates);
        let found = match self.verified.lookup(&key, now) {
            Some(found) => found,
            None => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )?;
                let found = identity_of(end_entity)
                    .map_err(|e| refuse(IdentityRefusal::NoIdentity(e.to_string())))?;
                self.verified.remember(key, found.clone(), end_entity, intermediates, now);
                found
            }
        };
        if !self.expected.contains(&found) {
            return Err(refuse(IdentityRefusal::Unexpected {
                expected: self.expected.clone(),
                found,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: the client must present a certificate chaining to our roots
/// whose identity is in one of the trust domains we accept. Which identities
/// may do what is policy, decided later with the verified identity. Chains
/// verified before are remembered as on the client side.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    verified: Arc<VerifiedChains>,
    trust_domains: Vec<String>,
}

impl SpiffeClientVerifier {
    /// `inner` and `verified` must belong to the same roots.
    pub(crate) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        verified: Arc<VerifiedChains>,
        trust_domains: Vec<String>,
    ) -> Self {
        Self { inner, verified, trust_domains }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Mesh clients have exactly one certificate; hints would only leak
        // the names of our roots to anyone who connects.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = ChainKey::new(Usage::Client, end_entity, intermediates);
        let found = match self.verified.lookup(&key, now) {
            Some(found) => found,
            None => {
                self.inner.verify_client_cert(end_entity, intermediates, now)?;
                let found = identity_of(end_entity)
                    .map_err(|e| refuse(IdentityRefusal::NoIdentity(e.to_string())))?;
                self.verified.remember(key, found.clone(), end_entity, intermediates, now);
                found
            }
        };
        if !self.trust_domains.iter().any(|td| td == found.trust_domain()) {
            return Err(refuse(IdentityRefusal::ForeignTrustDomain {
                found,
                allowed: self.trust_domains.clone(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
