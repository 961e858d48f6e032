//! Certificates for the crate's unit tests (testkit depends on hbone, so
//! hbone's own unit tests cannot use its `TestCa`).

#![allow(clippy::unwrap_used)]

use mesh_core::Identity;

use crate::cert::{TrustBundle, WorkloadCertificate};

/// `spiffe://cluster.local/ns/ns/sa/<sa>`.
pub(crate) fn identity(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/ns/sa/{sa}").parse().unwrap()
}

/// A self-signed certificate for [`identity`]`(sa)`, its own root.
pub(crate) fn self_signed(sa: &str) -> WorkloadCertificate {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let uri = rcgen::string::Ia5String::try_from(identity(sa).to_string()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let pem = params.self_signed(&key).unwrap().pem();
    let roots = TrustBundle::from_pem(&pem).unwrap();
    WorkloadCertificate::from_pem(&pem, &key.serialize_pem(), roots).unwrap()
}
