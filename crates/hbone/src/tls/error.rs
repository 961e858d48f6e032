//! One place that turns rustls' errors into the refusals callers act on.

use std::io;

use mesh_core::Identity;
use rustls::{AlertDescription, CertificateError};

use super::verify::IdentityRefusal;

/// Why a TLS handshake or configuration failed, one variant per cause a
/// caller (or a metric's `response_flags`) needs to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The peer's identity is not one of those expected for the destination.
    #[error("peer is {found}, expected one of [{}]", expected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    WrongIdentity {
        /// Identities that would have been accepted.
        expected: Vec<Identity>,
        /// The identity the peer proved.
        found: Identity,
    },
    /// The peer's identity is in a trust domain we do not accept.
    #[error("peer {found} is outside the accepted trust domains [{}]", allowed.join(", "))]
    ForeignTrustDomain {
        /// The identity the peer proved.
        found: Identity,
        /// Trust domains accepted.
        allowed: Vec<String>,
    },
    /// The peer's chain does not lead to one of our roots.
    #[error("peer certificate is not signed by a trusted mesh root")]
    UntrustedRoot,
    /// The peer's certificate has expired.
    #[error("peer certificate has expired")]
    Expired,
    /// The peer's certificate is not valid yet.
    #[error("peer certificate is not valid yet")]
    NotYetValid,
    /// The client presented no certificate.
    #[error("peer presented no client certificate")]
    MissingClientCertificate,
    /// The peer's certificate is malformed or carries no usable identity.
    #[error("peer certificate is unusable: {0}")]
    BadPeerCertificate(String),
    /// The peer refused our certificate or the handshake (TLS alert).
    #[error("peer refused the handshake: {0:?}")]
    PeerRefused(AlertDescription),
    /// A protocol other than `h2` was negotiated.
    #[error("peer negotiated ALPN {0:?}, HBONE needs \"h2\"")]
    WrongAlpn(String),
    /// The caller asked for a client with no acceptable identity.
    #[error("no expected peer identity given")]
    NoExpectedIdentity,
    /// Configuration could not be built (bad key, ...).
    #[error("TLS configuration rejected")]
    Config(#[source] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client verifier could not be built")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// Another handshake failure.
    #[error("TLS handshake failed")]
    Handshake(#[source] rustls::Error),
    /// The socket failed or closed during the handshake.
    #[error("connection failed during the TLS handshake")]
    Io(#[source] io::Error),
}

impl TlsError {
    /// Classifies an error from a tokio-rustls handshake.
    pub fn from_io(err: io::Error) -> Self {
        match err.downcast::<rustls::Error>() {
            Ok(rustls_err) => Self::from_rustls(rustls_err),
            Err(err) => Self::Io(err),
        }
    }

    /// Classifies a rustls error.
    pub fn from_rustls(err: rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(cert_err) => Self::from_certificate_error(cert_err),
            rustls::Error::NoCertificatesPresented => Self::MissingClientCertificate,
            rustls::Error::AlertReceived(alert) => Self::PeerRefused(alert),
            other => Self::Handshake(other),
        }
    }

    fn from_certificate_error(err: CertificateError) -> Self {
        match err {
            // An issuer we do not know, or one whose name matches a root of
            // ours but whose signature does not verify (a rogue CA that
            // copied our root's name): either way, not our mesh.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::UntrustedRoot,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<IdentityRefusal>() {
                Some(IdentityRefusal::Unexpected { expected, found }) => {
                    Self::WrongIdentity { expected: expected.clone(), found: found.clone() }
                }
                Some(IdentityRefusal::ForeignTrustDomain { found, allowed }) => {
                    Self::ForeignTrustDomain { found: found.clone(), allowed: allowed.clone() }
                }
                Some(IdentityRefusal::NoIdentity(why)) => Self::BadPeerCertificate(why.clone()),
                None => Self::Handshake(rustls::Error::InvalidCertificate(
                    CertificateError::Other(other),
                )),
            },
            other => Self::BadPeerCertificate(format!("{other:?}")),
        }
    }
}
