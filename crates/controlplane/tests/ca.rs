//! The mesh CA over gRPC and mTLS on loopback: issuing, and every refusal.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use controlplane::ca::{
    CaConfig, CaMaterial, CaService, CertificateAuthority, LocalAuthenticator, StaticNodeRegistry,
};
use hbone::{CertificateRequest, TrustBundle, WorkloadCertificate};
use mesh_core::Identity;
use mesh_proto::ca::IstioCertificateRequest;
use mesh_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use prost_types::{Struct, Value, value::Kind};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa).unwrap()
}

struct Fixture {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    roots: TrustBundle,
    cp_identity: Identity,
    registry: Arc<StaticNodeRegistry>,
}

/// Issues a certificate straight from the CA, as bootstrap would.
fn issue_direct(
    ca: &CertificateAuthority,
    roots: &TrustBundle,
    identity: &Identity,
) -> WorkloadCertificate {
    let request = CertificateRequest::generate(identity).unwrap();
    let checked = ca.check_csr(&request.csr_pem).unwrap();
    let chain = ca.sign(&checked, Duration::ZERO).unwrap();
    request.into_certificate(&chain.concat(), roots.clone()).unwrap()
}

async fn start(material: CaMaterial) -> Fixture {
    let ca = Arc::new(CertificateAuthority::new(&material, CaConfig::new(TD)).unwrap());
    let roots = TrustBundle::from_pem(&material.root_pem).unwrap();
    let cp_identity = id("mesh-system", "controlplane");
    let cp_cert = issue_direct(&ca, &roots, &cp_identity);
    let tls = hbone::tls::server_config_optional_client_cert(&cp_cert, &[]).unwrap();
    let registry = Arc::new(StaticNodeRegistry::default());
    let auth =
        Arc::new(LocalAuthenticator::new([("token-for-a".to_string(), "node-a".to_string())]));
    let service = CaService::new(ca.clone(), auth, registry.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = controlplane::tls::incoming(listener, Arc::new(tls));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_service())
            .serve_with_incoming(incoming),
    );
    Fixture { addr, ca, roots, cp_identity, registry }
}

impl Fixture {
    fn client(&self, cert: Option<&WorkloadCertificate>) -> IstioCertificateServiceClient<Channel> {
        let expected = std::slice::from_ref(&self.cp_identity);
        let tls = match cert {
            Some(cert) => hbone::tls::client_config(cert, expected).unwrap(),
            None => hbone::tls::client_config_without_cert(&self.roots, expected).unwrap(),
        };
        IstioCertificateServiceClient::new(xds::tls_channel(self.addr, tls))
    }
}

/// Sends a request that must be refused, and returns the refusal.
async fn refused(
    client: &mut IstioCertificateServiceClient<Channel>,
    request: tonic::Request<IstioCertificateRequest>,
) -> tonic::Status {
    client.create_certificate(request).await.expect_err("the CA should refuse this request")
}

fn request(
    csr: &str,
    validity: i64,
    impersonate: Option<&str>,
    token: Option<&str>,
) -> tonic::Request<IstioCertificateRequest> {
    let metadata = impersonate.map(|who| Struct {
        fields: [(
            "ImpersonatedIdentity".to_string(),
            Value { kind: Some(Kind::StringValue(who.to_string())) },
        )]
        .into(),
    });
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: validity,
        metadata,
    });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn a_workload_renews_its_own_identity_and_the_chain_works_for_hbone() {
    let f = start(CaMaterial::generate(TD).unwrap()).await;
    let me = id("default", "sleep");
    let current = issue_direct(&f.ca, &f.roots, &me);
    let renewal = CertificateRequest::generate(&me).unwrap();
    let response = f
        .client(Some(&current))
        .create_certificate(request(&renewal.csr_pem, 3600, None, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.cert_chain.len(), 1 + 1, "leaf, then the (self-signed) root");
    let renewed = renewal.into_certificate(&response.cert_chain.concat(), f.roots.clone()).unwrap();
    assert_eq!(renewed.identity(), &me);
    let life = renewed.info().not_after.duration_since(renewed.info().not_before).unwrap();
    assert!(life <= Duration::from_secs(3600 + 60), "requested validity honoured: {life:?}");

    // The issued certificate works for HBONE with the hbone verifier.
    let server_id = id("default", "httpbin");
    let server_cert = issue_direct(&f.ca, &f.roots, &server_id);
    let hbone_addr = testkit::spawn_hbone(&server_cert, testkit::ForwardingHandler::new()).await;
    let echo = testkit::spawn_echo().await;
    let pool = hbone::Pool::new(hbone::PoolConfig::default(), Arc::new(hbone::TcpDialer));
    let connect = hbone::ConnectRequest::new(renewed, hbone_addr, vec![server_id], echo);
    pool.connect(&connect).await.unwrap();
}

#[tokio::test]
async fn validity_is_capped() {
    let f = start(CaMaterial::generate(TD).unwrap()).await;
    let me = id("default", "sleep");
    let current = issue_direct(&f.ca, &f.roots, &me);
    let renewal = CertificateRequest::generate(&me).unwrap();
    let ten_days = 10 * 86_400;
    let chain = f
        .client(Some(&current))
        .create_certificate(request(&renewal.csr_pem, ten_days, None, None))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let cert = renewal.into_certificate(&chain.concat(), f.roots.clone()).unwrap();
    let life = cert.info().not_after.duration_since(cert.info().not_before).unwrap();
    assert!(life <= Duration::from_secs(86_400 + 60), "capped at 24h: {life:?}");
}

#[tokio::test]
async fn a_node_proxy_obtains_certificates_for_pods_on_its_node_only() {
    let f = start(CaMaterial::generate(TD).unwrap()).await;
    let on_a = id("apps", "on-a");
    let on_b = id("apps", "on-b");
    f.registry.add("node-a", on_a.clone());
    f.registry.add("node-b", on_b.clone());
    let mut client = f.client(None);

    let csr = CertificateRequest::generate(&on_a).unwrap();
    let chain = client
        .create_certificate(request(&csr.csr_pem, 0, Some(&on_a.to_string()), Some("token-for-a")))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(csr.into_certificate(&chain.concat(), f.roots.clone()).unwrap().identity(), &on_a);

    let csr = CertificateRequest::generate(&on_b).unwrap();
    let status = client
        .create_certificate(request(&csr.csr_pem, 0, Some(&on_b.to_string()), Some("token-for-a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("no pod with identity"), "{}", status.message());

    // Without naming the identity, a node proxy gets nothing.
    let csr = CertificateRequest::generate(&on_a).unwrap();
    let status = refused(&mut client, request(&csr.csr_pem, 0, None, Some("token-for-a"))).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("ImpersonatedIdentity"), "{}", status.message());

    // Naming one identity and asking for another is refused.
    let status = client
        .create_certificate(request(&csr.csr_pem, 0, Some(&on_b.to_string()), Some("token-for-a")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn each_refusal_has_its_own_status() {
    let f = start(CaMaterial::generate(TD).unwrap()).await;
    let me = id("default", "sleep");
    let current = issue_direct(&f.ca, &f.roots, &me);
    let mut authenticated = f.client(Some(&current));
    let mut anonymous = f.client(None);
    let csr = |who: &Identity| CertificateRequest::generate(who).unwrap().csr_pem;

    // Unauthenticated: no credentials at all, or a token nobody issued.
    let status = refused(&mut anonymous, request(&csr(&me), 0, None, None)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = refused(&mut anonymous, request(&csr(&me), 0, None, Some("guess"))).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Another workload's identity.
    let other = id("default", "other");
    let status = refused(&mut authenticated, request(&csr(&other), 0, None, None)).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("may not obtain"), "{}", status.message());

    // A workload pretending to be a node proxy.
    let status = authenticated
        .create_certificate(request(&csr(&me), 0, Some(&me.to_string()), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Another trust domain.
    let foreign = Identity::new("evil.org", "default", "sleep").unwrap();
    let status = refused(&mut authenticated, request(&csr(&foreign), 0, None, None)).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("outside trust domain"), "{}", status.message());

    // A CSR that is not a CSR.
    let status = refused(&mut authenticated, request("garbage", 0, None, None)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("malformed"), "{}", status.message());

    // A CSR whose signature was tampered with.
    let good = csr(&me);
    let mut block = pem::parse(&good).unwrap();
    let mut bytes = block.contents().to_vec();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    block = pem::Pem::new(block.tag(), bytes);
    let status = refused(&mut authenticated, request(&pem::encode(&block), 0, None, None)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A CSR asking for a DNS name besides the identity.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(me.to_string().try_into().unwrap()));
    let two_sans = params.serialize_request(&key).unwrap().pem().unwrap();
    let status = refused(&mut authenticated, request(&two_sans, 0, None, None)).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("exactly one"), "{}", status.message());

    // A malformed ImpersonatedIdentity.
    let status = refused(
        &mut anonymous,
        request(&csr(&me), 0, Some("not-an-identity"), Some("token-for-a")),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_intermediate_under_a_user_root_signs_and_chains_leaf_first() {
    // The user's root, kept offline; the mesh gets an intermediate.
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = rcgen::CertificateParams::default();
    root_params.distinguished_name.push(rcgen::DnType::CommonName, "corp root");
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let int_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut int_params = rcgen::CertificateParams::default();
    int_params.distinguished_name.push(rcgen::DnType::CommonName, "mesh intermediate");
    int_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int_params.key_usages =
        vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), intermediate.pem()).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(dir.path().join("cert-chain.pem"), intermediate.pem() + &root.pem()).unwrap();
    let material = CaMaterial::load(dir.path()).unwrap().unwrap();

    let f = start(material).await;
    let me = id("default", "sleep");
    let current = issue_direct(&f.ca, &f.roots, &me);
    let renewal = CertificateRequest::generate(&me).unwrap();
    let chain = f
        .client(Some(&current))
        .create_certificate(request(&renewal.csr_pem, 0, None, None))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain[1].trim(), intermediate.pem().trim());
    assert_eq!(chain[2].trim(), root.pem().trim());
    // Verifies against the user's root alone.
    let roots = TrustBundle::from_pem(&root.pem()).unwrap();
    renewal.into_certificate(&chain.concat(), roots).unwrap();
}
