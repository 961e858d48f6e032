//! The CA's key material: generated on first start and kept, or provided
//! by the user (an intermediate under their own root).
//!
//! On disk it uses Istio's `cacerts` layout, so an existing Istio plug-in CA
//! directory works unchanged:
//! - `ca-cert.pem`: the certificate that signs workloads;
//! - `ca-key.pem`: its private key (written with mode 0600);
//! - `root-cert.pem`: the root workloads trust;
//! - `cert-chain.pem` (optional): `ca-cert.pem` and any intermediates up to
//!   the root, in order.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

/// File names of the `cacerts` layout.
pub const CA_CERT: &str = "ca-cert.pem";
/// See [`CA_CERT`].
pub const CA_KEY: &str = "ca-key.pem";
/// See [`CA_CERT`].
pub const ROOT_CERT: &str = "root-cert.pem";
/// See [`CA_CERT`].
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Lifetime of a generated root.
const GENERATED_ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why key material could not be loaded, generated or saved.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Some of the files are there, some not.
    #[error(
        "{origin}: has {present} but not {missing}; provide ca-cert.pem, ca-key.pem and root-cert.pem together"
    )]
    Incomplete {
        /// The directory or Secret.
        origin: String,
        /// A file that exists.
        present: &'static str,
        /// A file that does not.
        missing: &'static str,
    },
    /// A PEM file does not hold what it should.
    #[error("{file}: {why}")]
    Bad {
        /// The file.
        file: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Generating the root failed.
    #[error("could not generate the CA")]
    Generate(#[source] rcgen::Error),
    /// The system's random source failed (no serial number).
    #[error("could not generate the CA: {0}")]
    Random(#[source] super::authority::RandomFailed),
    /// The Kubernetes API failed while reading or writing the Secret.
    #[error("Secret {secret}: {why}")]
    Kubernetes {
        /// The Secret's name.
        secret: String,
        /// What went wrong.
        why: String,
    },
}

/// The signing certificate, its key, the chain up to the root, and the root.
#[derive(Clone)]
pub struct CaMaterial {
    /// The certificate that signs workloads, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Certificates between the signing certificate and the root, PEM, in
    /// order (empty when the signing certificate is the root).
    pub intermediates_pem: Vec<String>,
    /// The root, PEM.
    pub root_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CaMaterial")
            .field("intermediates", &self.intermediates_pem.len())
            .field("self_signed", &(self.cert_pem == self.root_pem))
            .finish()
    }
}

impl CaMaterial {
    /// A new self-signed root for `trust_domain`, valid from now for ten years.
    pub fn generate(trust_domain: &str) -> Result<Self, MaterialError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(MaterialError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(DnType::CommonName, "mesh root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        // A little slack for clocks that are behind ours.
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + GENERATED_ROOT_LIFETIME).into();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &super::authority::random_serial().map_err(MaterialError::Random)?,
        ));
        let cert = params.self_signed(&key).map_err(MaterialError::Generate)?;
        let pem = cert.pem();
        Ok(Self {
            cert_pem: pem.clone(),
            key_pem: key.serialize_pem(),
            intermediates_pem: Vec::new(),
            root_pem: pem,
        })
    }

    /// Loads the `cacerts` layout from `dir`; `Ok(None)` if none of its
    /// files exist.
    pub fn load(dir: &Path) -> Result<Option<Self>, MaterialError> {
        Self::from_parts(&dir.display().to_string(), |name| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(MaterialError::Io { path, source }),
            }
        })
    }

    /// Builds from the `cacerts` parts, wherever they are kept (files, a
    /// Secret's data): `get(name)` returns a part's text if present.
    /// `Ok(None)` when none of the required parts is present.
    pub fn from_parts(
        origin: &str,
        get: impl Fn(&'static str) -> Result<Option<String>, MaterialError>,
    ) -> Result<Option<Self>, MaterialError> {
        let required = [CA_CERT, CA_KEY, ROOT_CERT];
        let mut found = Vec::new();
        for name in required {
            found.push(get(name)?);
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        let missing = required.iter().zip(&found).find(|(_, f)| f.is_none()).map(|(n, _)| *n);
        let present = required.iter().zip(&found).find(|(_, f)| f.is_some()).map(|(n, _)| *n);
        if let (Some(missing), Some(present)) = (missing, present) {
            return Err(MaterialError::Incomplete { origin: origin.to_string(), present, missing });
        }
        let mut parts = found.into_iter().flatten();
        let (Some(cert_pem), Some(key_pem), Some(root_pem)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let intermediates_pem = match get(CERT_CHAIN)? {
            // cert-chain.pem starts with ca-cert.pem and may end with the
            // root; keep only what lies between (compared as DER: the same
            // certificate may be PEM-encoded differently).
            Some(chain) => {
                let own = single_der(&cert_pem, CA_CERT)?;
                let root = single_der(&root_pem, ROOT_CERT)?;
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| MaterialError::Bad { file: CERT_CHAIN, why: e.to_string() })?
                    .into_iter()
                    .filter(|der| der.as_ref() != own.as_slice() && der.as_ref() != root.as_slice())
                    .map(|der| to_pem(&der))
                    .collect()
            }
            None => Vec::new(),
        };
        let material = Self { cert_pem, key_pem, intermediates_pem, root_pem };
        material.validate()?;
        Ok(Some(material))
    }

    /// The `cacerts` parts: (file name, text, private?).
    pub fn to_parts(&self) -> Vec<(&'static str, String, bool)> {
        let mut chain = self.cert_pem.clone();
        for c in &self.intermediates_pem {
            chain.push_str(c);
        }
        if self.cert_pem != self.root_pem {
            chain.push_str(&self.root_pem);
        }
        vec![
            (CA_KEY, self.key_pem.clone(), true),
            (CA_CERT, self.cert_pem.clone(), false),
            (ROOT_CERT, self.root_pem.clone(), false),
            (CERT_CHAIN, chain, false),
        ]
    }

    /// Writes the `cacerts` layout to `dir` (created if needed), the key
    /// readable by its owner only.
    pub fn save(&self, dir: &Path) -> Result<(), MaterialError> {
        let io = |path: PathBuf| move |source| MaterialError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let write = |name: &str, text: &str, private: bool| -> Result<(), MaterialError> {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(if private { 0o600 } else { 0o644 });
            }
            let mut file = options.open(&tmp).map_err(io(tmp.clone()))?;
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io(tmp.clone()))?;
            file.sync_all().map_err(io(tmp.clone()))?;
            // Rename last, so a crash never leaves half a key behind.
            std::fs::rename(&tmp, &path).map_err(io(path))
        };
        for (name, text, private) in self.to_parts() {
            write(name, &text, private)?;
        }
        Ok(())
    }

    /// Loads from `dir`, or generates a root for `trust_domain` and saves it
    /// there: the CA keeps its identity across restarts.
    pub fn load_or_generate(dir: &Path, trust_domain: &str) -> Result<Self, MaterialError> {
        if let Some(material) = Self::load(dir)? {
            return Ok(material);
        }
        let material = Self::generate(trust_domain)?;
        material.save(dir)?;
        Ok(material)
    }

    /// Checks the signing certificate is a CA, its key matches, and the
    /// chain leads to the root.
    pub fn validate(&self) -> Result<(), MaterialError> {
        let bad = |file, why: String| MaterialError::Bad { file, why };
        let cert_der = single_der(&self.cert_pem, CA_CERT)?;
        let (_, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| bad(CA_CERT, e.to_string()))?;
        if !cert.is_ca() {
            return Err(bad(CA_CERT, "is not a CA certificate (basicConstraints CA:false)".into()));
        }
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| bad(CA_KEY, e.to_string()))?;
        if rcgen::PublicKeyData::der_bytes(&key)
            != cert.public_key().subject_public_key.data.as_ref()
        {
            return Err(bad(CA_KEY, "does not match ca-cert.pem".into()));
        }
        // Each certificate must be signed by the next; the root by itself.
        let mut chain = vec![cert_der.clone()];
        for pem in &self.intermediates_pem {
            chain.push(single_der(pem, CERT_CHAIN)?);
        }
        let root_der = single_der(&self.root_pem, ROOT_CERT)?;
        if chain.last() != Some(&root_der) {
            chain.push(root_der);
        }
        for pair in chain.windows(2) {
            let (_, child) =
                X509Certificate::from_der(&pair[0]).map_err(|e| bad(CERT_CHAIN, e.to_string()))?;
            let (_, parent) =
                X509Certificate::from_der(&pair[1]).map_err(|e| bad(CERT_CHAIN, e.to_string()))?;
            child.verify_signature(Some(parent.public_key())).map_err(|_| {
                bad(
                    CERT_CHAIN,
                    format!("{} is not signed by {}", child.subject(), parent.subject()),
                )
            })?;
        }
        Ok(())
    }
}

fn single_der(pem: &str, file: &'static str) -> Result<Vec<u8>, MaterialError> {
    let mut ders = CertificateDer::pem_slice_iter(pem.as_bytes());
    match (ders.next(), ders.next()) {
        (Some(Ok(der)), None) => Ok(der.to_vec()),
        (Some(Err(e)), _) => Err(MaterialError::Bad { file, why: e.to_string() }),
        (None, _) => Err(MaterialError::Bad { file, why: "holds no certificate".into() }),
        (Some(Ok(_)), Some(_)) => {
            Err(MaterialError::Bad { file, why: "holds more than one certificate".into() })
        }
    }
}

/// PEM-encodes a DER certificate.
pub(crate) fn to_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}
