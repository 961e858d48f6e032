//! A mesh CA for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hbone::{TrustBundle, WorkloadCertificate};
use mesh_core::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A root (and optionally an intermediate) that signs workload certificates.
///
/// Deterministic where tests look: validity windows are computed from the
/// `now` the CA was made with, and serial numbers count up from 1 in issue
/// order. Keys are freshly random (ECDSA signatures are randomised anyway).
pub struct TestCa {
    trust_domain: String,
    now: SystemTime,
    root_der: CertificateDer<'static>,
    root_pem: String,
    /// The certificate that signs leaves (the root, or the intermediate).
    signer: Issuer<'static, KeyPair>,
    /// The intermediate's DER, when there is one.
    intermediate_der: Option<CertificateDer<'static>>,
    intermediate_pem: String,
    serial: AtomicU64,
}

/// Shape of a leaf certificate, for refusal tests.
#[derive(Clone, Debug)]
pub struct LeafOptions {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// URI SANs; by default the identity's.
    pub uris: Option<Vec<String>>,
}

impl TestCa {
    /// A root-only CA for `trust_domain`, valid around the current time.
    pub fn new(trust_domain: &str) -> Self {
        Self::build(trust_domain, SystemTime::now(), false)
    }

    /// A CA whose leaves are signed by an intermediate under the root, so
    /// chains have two certificates.
    pub fn with_intermediate(trust_domain: &str) -> Self {
        Self::build(trust_domain, SystemTime::now(), true)
    }

    /// A root-only CA whose clock is `now`.
    pub fn at(trust_domain: &str, now: SystemTime) -> Self {
        Self::build(trust_domain, now, false)
    }

    fn build(trust_domain: &str, now: SystemTime, intermediate: bool) -> Self {
        let day = Duration::from_secs(86_400);
        let mut root_params = ca_params(&format!("{trust_domain} test root"));
        root_params.not_before = (now - day).into();
        root_params.not_after = (now + 3650 * day).into();
        root_params.serial_number = Some(SerialNumber::from_slice(&[0x7f, 1]));
        let root_key = new_key();
        let root = root_params.self_signed(&root_key).unwrap();
        let root_der = root.der().clone();
        let root_pem = root.pem();
        let root_issuer = Issuer::new(root_params, root_key);
        let (signer, intermediate_der, intermediate_pem) = if intermediate {
            let mut params = ca_params(&format!("{trust_domain} test intermediate"));
            params.not_before = (now - day).into();
            params.not_after = (now + 365 * day).into();
            params.serial_number = Some(SerialNumber::from_slice(&[0x7f, 2]));
            let key = new_key();
            let cert = params.signed_by(&key, &root_issuer).unwrap();
            (Issuer::new(params, key), Some(cert.der().clone()), cert.pem())
        } else {
            (root_issuer, None, String::new())
        };
        Self {
            trust_domain: trust_domain.to_string(),
            now,
            root_der,
            root_pem,
            signer,
            intermediate_der,
            intermediate_pem,
            serial: AtomicU64::new(1),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>` in this CA's trust domain.
    pub fn identity(&self, ns: &str, sa: &str) -> Identity {
        Identity::new(&self.trust_domain, ns, sa).unwrap()
    }

    /// The roots to trust.
    pub fn roots(&self) -> TrustBundle {
        TrustBundle::new(vec![self.root_der.clone()]).unwrap()
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The default leaf validity: from a minute before the CA's `now` to a
    /// day after.
    pub fn default_options(&self) -> LeafOptions {
        LeafOptions {
            not_before: self.now - Duration::from_secs(60),
            not_after: self.now + Duration::from_secs(86_400),
            uris: None,
        }
    }

    /// A certificate for `identity`, trusting this CA's root.
    pub fn issue(&self, identity: &Identity) -> WorkloadCertificate {
        self.issue_with(identity, self.default_options())
    }

    /// A certificate for `identity` shaped by `options`.
    pub fn issue_with(&self, identity: &Identity, options: LeafOptions) -> WorkloadCertificate {
        let key = new_key();
        let chain = self.sign_leaf(&key, identity, &options);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCertificate::new(chain, key, self.roots()).unwrap()
    }

    /// A chain (DER, leaf first) and key for raw refusal tests, skipping the
    /// checks [`WorkloadCertificate::new`] would make.
    pub fn issue_raw(
        &self,
        identity: &Identity,
        options: LeafOptions,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = new_key();
        let chain = self.sign_leaf(&key, identity, &options);
        (chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// Signs a PEM CSR as the mesh CA would, returning the PEM chain leaf
    /// first. Copies the CSR's SANs; no policy checks (that is the real CA's
    /// job).
    pub fn sign_csr(&self, csr_pem: &str) -> String {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let options = self.default_options();
        self.leaf_params(&mut csr.params, &options);
        let cert = csr.signed_by(&self.signer).unwrap();
        cert.pem() + &self.intermediate_pem
    }

    fn sign_leaf(
        &self,
        key: &KeyPair,
        identity: &Identity,
        options: &LeafOptions,
    ) -> Vec<CertificateDer<'static>> {
        let mut params = CertificateParams::default();
        let uris = options.uris.clone().unwrap_or_else(|| vec![identity.to_string()]);
        params.subject_alt_names =
            uris.into_iter().map(|u| SanType::URI(u.try_into().unwrap())).collect();
        self.leaf_params(&mut params, options);
        let cert = params.signed_by(key, &self.signer).unwrap();
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.intermediate_der.clone());
        chain
    }

    fn leaf_params(&self, params: &mut CertificateParams, options: &LeafOptions) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let sans = std::mem::take(&mut params.subject_alt_names);
        *params = hbone::cert::workload_leaf_params(
            options.not_before,
            options.not_after,
            &serial.to_be_bytes(),
        );
        params.subject_alt_names = sans;
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "mesh test");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}
