//! Certificates: CSRs, chains, identities and validity.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use hbone::cert::{parse_certificate, parse_pem_chain};
use hbone::{CertificateError, CertificateRequest, TrustBundle, WorkloadCertificate};
use testkit::TestCa;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

#[test]
fn csr_asks_only_for_the_identity_uri() {
    let ca = TestCa::new("cluster.local");
    let id = ca.identity("default", "sleep");
    let request = CertificateRequest::generate(&id).unwrap();
    assert!(request.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));

    let der = rustls_pki_types::pem::PemObject::from_pem_slice(request.csr_pem.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'static>| d)
        .unwrap();
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
    csr.verify_signature().unwrap();
    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            sans.extend(san.general_names.iter().map(|n| format!("{n:?}")));
            assert!(
                matches!(san.general_names.as_slice(), [GeneralName::URI(u)] if *u == id.to_string())
            );
        }
    }
    assert_eq!(sans.len(), 1, "exactly one SAN: {sans:?}");
    // ECDSA P-256 with SHA-256.
    assert_eq!(csr.signature_algorithm.algorithm.to_id_string(), "1.2.840.10045.4.3.2");
}

#[test]
fn signed_csr_becomes_a_workload_certificate() {
    let ca = TestCa::with_intermediate("cluster.local");
    let id = ca.identity("ns1", "app");
    let request = CertificateRequest::generate(&id).unwrap();
    let chain_pem = ca.sign_csr(&request.csr_pem);
    let cert = request.into_certificate(&chain_pem, ca.roots()).unwrap();
    assert_eq!(cert.identity(), &id);
    assert_eq!(cert.chain().len(), 2, "leaf and intermediate");
    let life = cert.info().not_after.duration_since(cert.info().not_before).unwrap();
    assert_eq!(cert.refresh_at(), cert.info().not_before + life / 2);
}

#[test]
fn chain_for_another_identity_is_refused() {
    let ca = TestCa::new("cluster.local");
    let asked = ca.identity("ns1", "app");
    let other = ca.identity("ns1", "other");
    let request = CertificateRequest::generate(&asked).unwrap();
    let wrong = CertificateRequest::generate(&other).unwrap();
    let chain_pem = ca.sign_csr(&wrong.csr_pem);
    let err = request.into_certificate(&chain_pem, ca.roots()).unwrap_err();
    // Either the identity or the key gives it away; the identity is checked
    // after the key, so the key mismatch is reported first.
    assert!(matches!(err, CertificateError::Key(_)), "{err:?}");
}

#[test]
fn reads_identity_validity_and_serial() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ca = TestCa::at("example.org", now);
    let id = ca.identity("a", "b");
    let first = ca.issue(&id);
    let second = ca.issue(&id);
    let info = parse_certificate(&first.chain()[0]).unwrap();
    assert_eq!(info.identity, id);
    assert_eq!(info.not_before, now - Duration::from_secs(60));
    assert_eq!(info.not_after, now + Duration::from_secs(86_400));
    // Serials count up from 1 in issue order.
    assert_eq!(info.serial, "01");
    assert_eq!(second.info().serial, "02");
}

#[test]
fn certificates_without_exactly_one_spiffe_uri_are_refused() {
    let ca = TestCa::new("cluster.local");
    let id = ca.identity("a", "b");
    let mut none = ca.default_options();
    none.uris = Some(vec!["https://example.org/x".into()]);
    let (chain, key) = ca.issue_raw(&id, none);
    let err = WorkloadCertificate::new(chain, key, ca.roots()).unwrap_err();
    assert!(matches!(err, CertificateError::NoSpiffeUri), "{err:?}");

    let mut two = ca.default_options();
    two.uris = Some(vec![id.to_string(), "spiffe://cluster.local/ns/a/sa/c".into()]);
    let (chain, key) = ca.issue_raw(&id, two);
    let err = WorkloadCertificate::new(chain, key, ca.roots()).unwrap_err();
    assert!(matches!(err, CertificateError::SeveralSpiffeUris(2)), "{err:?}");

    let mut bad = ca.default_options();
    bad.uris = Some(vec!["spiffe://cluster.local/ns/a".into()]);
    let (chain, key) = ca.issue_raw(&id, bad);
    let err = WorkloadCertificate::new(chain, key, ca.roots()).unwrap_err();
    assert!(matches!(err, CertificateError::BadIdentity(_)), "{err:?}");
}

#[test]
fn key_must_match_the_leaf() {
    let ca = TestCa::new("cluster.local");
    let id = ca.identity("a", "b");
    let (chain, _) = ca.issue_raw(&id, ca.default_options());
    let (_, other_key) = ca.issue_raw(&id, ca.default_options());
    let err = WorkloadCertificate::new(chain, other_key, ca.roots()).unwrap_err();
    assert!(matches!(err, CertificateError::Key(_)), "{err:?}");
}

#[test]
fn bad_pem_is_named() {
    let err = parse_pem_chain("not pem at all", "certificate chain").unwrap_err();
    assert!(matches!(err, CertificateError::Empty("certificate chain")), "{err:?}");
    let err = parse_pem_chain(
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "certificate chain",
    )
    .unwrap_err();
    assert!(matches!(err, CertificateError::Pem { what: "certificate chain", .. }), "{err:?}");
    assert!(err.to_string().contains("certificate chain"));
    let err = TrustBundle::from_pem("").unwrap_err();
    assert!(matches!(err, CertificateError::Empty("trust bundle")));
    let garbage = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(parse_certificate(&garbage), Err(CertificateError::Malformed(_))));
}

#[test]
fn pem_round_trip_through_workload_certificate() {
    let ca = TestCa::new("cluster.local");
    let id = ca.identity("a", "b");
    let request = CertificateRequest::generate(&id).unwrap();
    let chain_pem = ca.sign_csr(&request.csr_pem);
    let key_pem = request.key_pem().to_string();
    let roots = TrustBundle::from_pem(&ca.root_pem()).unwrap();
    let cert = WorkloadCertificate::from_pem(&chain_pem, &key_pem, roots).unwrap();
    assert_eq!(cert.identity(), &id);
}
