//! Checking CSRs and signing workload certificates.

use std::time::{Duration, SystemTime};

use mesh_core::Identity;
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, SanType};

use super::CaError;
use super::material::CaMaterial;

/// Validity limits for issued certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// The trust domain every issued identity must be in.
    pub trust_domain: String,
    /// Validity when the request names none.
    pub default_validity: Duration,
    /// Longest validity granted, whatever the request says.
    pub max_validity: Duration,
}

impl CaConfig {
    /// 24 h by default and at most, as Istio.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            default_validity: Duration::from_secs(86_400),
            max_validity: Duration::from_secs(86_400),
        }
    }
}

/// Signs workload certificates with the mesh CA's key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM certificates after the leaf: signing certificate, intermediates,
    /// root (the root once, last).
    chain_tail: Vec<String>,
    root_pem: String,
    config: CaConfig,
}

/// A CSR that passed every check: its signature and its single identity.
pub struct CheckedCsr {
    params: CertificateSigningRequestParams,
    /// The identity it asks for.
    pub identity: Identity,
}

impl CertificateAuthority {
    /// A CA signing with `material`.
    pub fn new(material: &CaMaterial, config: CaConfig) -> Result<Self, CaError> {
        material.validate().map_err(CaError::Material)?;
        let key = KeyPair::from_pem(&material.key_pem)
            .map_err(|e| CaError::Signing(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&material.cert_pem, key)
            .map_err(|e| CaError::Signing(format!("CA certificate: {e}")))?;
        let mut chain_tail = vec![material.cert_pem.clone()];
        chain_tail.extend(material.intermediates_pem.iter().cloned());
        if material.cert_pem != material.root_pem {
            chain_tail.push(material.root_pem.clone());
        }
        Ok(Self { issuer, chain_tail, root_pem: material.root_pem.clone(), config })
    }

    /// The root workloads must trust, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// Parses a PEM CSR, verifies its signature, and reads the one SPIFFE
    /// identity it may ask for. Any other SAN (DNS, IP, a second URI) is
    /// refused: a workload certificate proves an identity and nothing else.
    pub fn check_csr(&self, csr_pem: &str) -> Result<CheckedCsr, CaError> {
        let params = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CaError::CsrSignature,
            other => CaError::CsrMalformed(other.to_string()),
        })?;
        let sans = &params.params.subject_alt_names;
        let identity = match sans.as_slice() {
            [SanType::URI(uri)] => uri
                .as_str()
                .parse::<Identity>()
                .map_err(|e| CaError::CsrIdentity(format!("{:?}: {e}", uri.as_str())))?,
            [] => return Err(CaError::CsrIdentity("no subject alternative name".into())),
            other => {
                return Err(CaError::CsrIdentity(format!(
                    "{} subject alternative names; exactly one spiffe:// URI is allowed",
                    other.len()
                )));
            }
        };
        if identity.trust_domain() != self.config.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                requested: identity,
                trust_domain: self.config.trust_domain.clone(),
            });
        }
        Ok(CheckedCsr { params, identity })
    }

    /// Signs a checked CSR for `requested` validity (0: the default),
    /// capped by the configuration. Returns PEM certificates, leaf first.
    pub fn sign(&self, csr: &CheckedCsr, requested: Duration) -> Result<Vec<String>, CaError> {
        let validity = if requested.is_zero() { self.config.default_validity } else { requested }
            .min(self.config.max_validity);
        self.sign_serving(csr, validity, &[])
    }

    /// Signs for exactly `validity`, uncapped, with `names` (DNS names and
    /// IP addresses) beside the SPIFFE URI: only for the control plane's
    /// own serving certificate, never for a caller's request.
    pub(crate) fn sign_serving(
        &self,
        csr: &CheckedCsr,
        validity: Duration,
        names: &[ServingName],
    ) -> Result<Vec<String>, CaError> {
        let now = SystemTime::now();
        // A minute of slack for peers whose clocks are slightly behind.
        let mut params = hbone::cert::workload_leaf_params(
            now - Duration::from_secs(60),
            now + validity,
            &random_serial().map_err(|e| CaError::Signing(e.to_string()))?,
        );
        let uri = rcgen::string::Ia5String::try_from(csr.identity.to_string())
            .map_err(|e| CaError::Signing(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in names {
            params.subject_alt_names.push(match name {
                ServingName::Dns(dns) => SanType::DnsName(
                    rcgen::string::Ia5String::try_from(dns.as_str())
                        .map_err(|e| CaError::Signing(e.to_string()))?,
                ),
                ServingName::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        // Only the CSR's public key is used; everything else is ours.
        let leaf = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain_tail.iter().cloned());
        Ok(chain)
    }
}

/// A name the control plane's serving certificate carries besides its
/// SPIFFE identity, so clients that verify a hostname (Istio's ztunnel
/// checks `istiod.istio-system.svc` when it dials an IP) accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServingName {
    /// A DNS name (`istiod.istio-system.svc`).
    Dns(String),
    /// An IP address.
    Ip(std::net::IpAddr),
}

impl std::str::FromStr for ServingName {
    type Err = String;

    /// An IP address, or a DNS name as TLS clients check them (letters,
    /// digits, `-`, dots; no wildcard, no trailing dot).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse() {
            return Ok(Self::Ip(ip));
        }
        match rustls_pki_types::DnsName::try_from(s) {
            Ok(_) if !s.ends_with('.') && !s.contains('*') => Ok(Self::Dns(s.to_ascii_lowercase())),
            _ => Err(format!("{s:?} is neither an IP address nor a DNS name")),
        }
    }
}

/// The system's random source failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random source failed: no serial number")]
pub struct RandomFailed;

/// 128 random bits, positive: serials must be unique and unpredictable.
/// Fails, rather than sign with a serial of zeros, when the system's
/// random source does.
pub(crate) fn random_serial() -> Result<[u8; 16], RandomFailed> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| RandomFailed)?;
    // Positive and non-zero, as RFC 5280 requires.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(serial)
}
