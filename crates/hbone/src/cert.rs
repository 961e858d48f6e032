//! Workload certificates: key generation, CSRs, parsing chains, reading the
//! SPIFFE identity and validity out of a certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::{Identity, IdentityError};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::tls::VerifiedChains;

/// Why a certificate, key or CSR could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// PEM text could not be decoded.
    #[error("{what} is not valid PEM")]
    Pem {
        /// What was being read (e.g. "certificate chain").
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM bundle held no certificate at all.
    #[error("{0} holds no certificate")]
    Empty(&'static str),
    /// The DER inside a certificate is malformed.
    #[error("certificate is not valid X.509: {0}")]
    Malformed(String),
    /// The certificate carries no `spiffe://` URI SAN.
    #[error("certificate has no spiffe:// URI subject alternative name")]
    NoSpiffeUri,
    /// The certificate carries more than one `spiffe://` URI SAN.
    #[error("certificate has {0} spiffe:// URI subject alternative names; exactly one is allowed")]
    SeveralSpiffeUris(usize),
    /// The URI SAN is not a valid workload identity.
    #[error("certificate's URI SAN is not a valid workload identity")]
    BadIdentity(#[source] IdentityError),
    /// The leaf certificate's identity is not the one it was issued for.
    #[error("certificate is for {found}, expected {expected}")]
    WrongIdentity {
        /// The identity the certificate was wanted for.
        expected: Identity,
        /// The identity it holds.
        found: Identity,
    },
    /// A key could not be generated, or a CSR not encoded.
    #[error("could not generate a key or CSR")]
    Generate(#[source] rcgen::Error),
    /// The private key is not usable for TLS (wrong type or does not match).
    #[error("private key is not usable")]
    Key(#[source] rustls::Error),
    /// A trust anchor could not be added to the root store.
    #[error("root certificate is not a usable trust anchor")]
    Root(#[source] rustls::Error),
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The identity in the certificate's only SPIFFE URI SAN.
    pub identity: Identity,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, as lowercase hex.
    pub serial: String,
}

/// The mesh's trust anchors: the roots every peer's chain must verify to.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    store: Arc<RootCertStore>,
    certs: Arc<[CertificateDer<'static>]>,
    verified: Arc<VerifiedChains>,
}

/// A private key and the PEM CSR asking the CA to certify it.
pub struct CertificateRequest {
    /// The identity the CSR asks for.
    pub identity: Identity,
    /// The CSR, PEM encoded (`-----BEGIN CERTIFICATE REQUEST-----`).
    pub csr_pem: String,
    key: PrivatePkcs8KeyDer<'static>,
    key_pem: String,
}

/// A workload's certificate chain (leaf first), its private key and the
/// roots it trusts: everything needed to open or accept HBONE connections as
/// that workload.
#[derive(Clone)]
pub struct WorkloadCertificate {
    info: CertificateInfo,
    chain: Arc<[CertificateDer<'static>]>,
    key: Arc<PrivateKeyDer<'static>>,
    roots: TrustBundle,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// Trusts the given root certificates.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertificateError> {
        if certs.is_empty() {
            return Err(CertificateError::Empty("trust bundle"));
        }
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store.add(cert.clone()).map_err(CertificateError::Root)?;
        }
        Ok(Self {
            store: Arc::new(store),
            certs: certs.into(),
            verified: Arc::new(VerifiedChains::default()),
        })
    }

    /// Trusts every certificate in a PEM bundle.
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        Self::new(parse_pem_chain(pem, "trust bundle")?)
    }

    /// The rustls root store.
    pub fn store(&self) -> &Arc<RootCertStore> {
        &self.store
    }

    /// The root certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Peer chains already verified against these roots.
    pub(crate) fn verified(&self) -> &Arc<VerifiedChains> {
        &self.verified
    }
}

// === impl CertificateRequest ===

impl CertificateRequest {
    /// Generates a fresh ECDSA P-256 key and a CSR whose only subject
    /// alternative name is the identity's URI (as Istio's CA expects).
    pub fn generate(identity: &Identity) -> Result<Self, CertificateError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CertificateError::Generate)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = rcgen::string::Ia5String::try_from(identity.to_string())
            .map_err(CertificateError::Generate)?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let csr = params.serialize_request(&key).map_err(CertificateError::Generate)?;
        let csr_pem = csr.pem().map_err(CertificateError::Generate)?;
        Ok(Self {
            identity: identity.clone(),
            csr_pem,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Combines the key with the chain the CA returned (PEM, leaf first),
    /// checking that the leaf is for the identity that was asked for.
    pub fn into_certificate(
        self,
        chain_pem: &str,
        roots: TrustBundle,
    ) -> Result<WorkloadCertificate, CertificateError> {
        let chain = parse_pem_chain(chain_pem, "certificate chain")?;
        let cert = WorkloadCertificate::new(chain, PrivateKeyDer::Pkcs8(self.key), roots)?;
        if cert.identity() != &self.identity {
            return Err(CertificateError::WrongIdentity {
                expected: self.identity,
                found: cert.identity().clone(),
            });
        }
        Ok(cert)
    }

    /// The private key, PKCS#8 DER.
    pub fn key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateRequest").field("identity", &self.identity).finish()
    }
}

// === impl WorkloadCertificate ===

impl WorkloadCertificate {
    /// Builds from a DER chain (leaf first) and its key.
    ///
    /// Checks that the leaf has exactly one SPIFFE identity and that the key
    /// is one rustls can sign with and matches the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: TrustBundle,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::Empty("certificate chain"))?;
        let info = parse_certificate(leaf)?;
        let signing_key =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertificateError::Key)?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing_key);
        certified.keys_match().map_err(CertificateError::Key)?;
        Ok(Self { info, chain: chain.into(), key: Arc::new(key), roots })
    }

    /// Builds from PEM text: the chain (leaf first) and a PKCS#8, SEC1 or
    /// PKCS#1 private key.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        roots: TrustBundle,
    ) -> Result<Self, CertificateError> {
        let chain = parse_pem_chain(chain_pem, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|source| CertificateError::Pem { what: "private key", source })?;
        Self::new(chain, key, roots)
    }

    /// The identity this certificate proves.
    pub fn identity(&self) -> &Identity {
        &self.info.identity
    }

    /// What the leaf certificate says.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Whether `other` is this very certificate (a clone of it), not merely
    /// one for the same identity: a renewed certificate is a new one.
    pub fn is_same(&self, other: &WorkloadCertificate) -> bool {
        Arc::ptr_eq(&self.chain, &other.chain) && Arc::ptr_eq(&self.key, &other.key)
    }

    /// The roots peers must chain to.
    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// When this certificate should be replaced: half way through its life,
    /// as Istio does, so a failed renewal still leaves time to retry.
    pub fn refresh_at(&self) -> SystemTime {
        let life =
            self.info.not_after.duration_since(self.info.not_before).unwrap_or(Duration::ZERO);
        self.info.not_before + life / 2
    }
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("info", &self.info)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

/// The shape of every workload certificate, for CAs to fill in: no
/// subject, not a CA, `digitalSignature` and `keyEncipherment`, and both
/// `serverAuth` and `clientAuth` (HBONE presents the same certificate in
/// both roles). The caller adds the identity's URI SAN.
pub fn workload_leaf_params(
    not_before: SystemTime,
    not_after: SystemTime,
    serial: &[u8],
) -> rcgen::CertificateParams {
    use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// Decodes every certificate in a PEM bundle, in order.
pub fn parse_pem_chain(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertificateError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(CertificateError::Empty(what));
    }
    Ok(certs)
}

/// Reads the SPIFFE identity, validity and serial out of a DER certificate.
pub fn parse_certificate(der: &CertificateDer<'_>) -> Result<CertificateInfo, CertificateError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let identity = spiffe_identity(&cert)?;
    let validity = cert.validity();
    Ok(CertificateInfo {
        identity,
        not_before: unix_to_system(validity.not_before.timestamp()),
        not_after: unix_to_system(validity.not_after.timestamp()),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// Reads only the SPIFFE identity out of a DER certificate.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<Identity, CertificateError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    spiffe_identity(&cert)
}

fn spiffe_identity(cert: &X509Certificate<'_>) -> Result<Identity, CertificateError> {
    let san =
        cert.subject_alternative_name().map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(mesh_core::SPIFFE_SCHEME) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertificateError::NoSpiffeUri),
        [uri] => uri.parse().map_err(CertificateError::BadIdentity),
        many => Err(CertificateError::SeveralSpiffeUris(many.len())),
    }
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
