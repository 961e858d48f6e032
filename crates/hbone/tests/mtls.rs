//! Mutual TLS: every refusal case, seen from the side that refuses.

// Helpers outside #[test] fns panic on broken fixtures, as tests should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hbone::{
    ConnectError, ConnectRequest, H2Settings, HboneServer, Pool, PoolConfig, ServeError, TcpDialer,
    TlsError, TrustBundle, WorkloadCertificate,
};
use mesh_core::Identity;
use testkit::{ForwardingHandler, TestCa};
use tokio::net::TcpListener;

struct Outcome {
    client: Result<hbone::H2Stream, ConnectError>,
    server: Option<Result<(), ServeError>>,
}

/// Starts an HBONE server for exactly one connection; the handle yields how
/// that connection ended.
async fn serve_one(
    server: &WorkloadCertificate,
    settings: H2Settings,
) -> (SocketAddr, tokio::task::JoinHandle<Result<(), ServeError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = hbone::tls::server_config(server, &[]).unwrap();
    let hbone = Arc::new(HboneServer::new(tls, ForwardingHandler::new(), settings));
    let served = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        hbone.serve_connection(tcp, peer).await
    });
    (addr, served)
}

/// Waits for a [`serve_one`] server's verdict.
async fn verdict(
    served: tokio::task::JoinHandle<Result<(), ServeError>>,
) -> Result<(), ServeError> {
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap()
}

/// Runs one handshake between a client holding `client` and expecting
/// `expected`, and a server holding `server`.
async fn handshake(
    client: &WorkloadCertificate,
    expected: Vec<Identity>,
    server: &WorkloadCertificate,
) -> Outcome {
    let echo = testkit::spawn_echo().await;
    let (addr, served) = serve_one(server, H2Settings::default()).await;
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let result = pool.connect(&request(client, expected, addr, echo)).await;
    let server = if result.is_err() { Some(verdict(served).await) } else { None };
    Outcome { client: result, server }
}

fn request(
    source: &WorkloadCertificate,
    expected: Vec<Identity>,
    hbone_addr: SocketAddr,
    target: SocketAddr,
) -> ConnectRequest {
    ConnectRequest::new(source.clone(), hbone_addr, expected, target)
}

fn client_tls_error(outcome: &Outcome) -> &TlsError {
    match &outcome.client {
        Err(ConnectError::Tls { source, .. }) => source,
        other => panic!("expected a TLS error on the client, got {other:?}"),
    }
}

fn server_tls_error(outcome: &Outcome) -> &TlsError {
    match &outcome.server {
        Some(Err(ServeError::Tls { source, .. })) => source,
        other => panic!("expected a TLS error on the server, got {other:?}"),
    }
}

#[tokio::test]
async fn matching_identities_connect() {
    let ca = TestCa::with_intermediate("cluster.local");
    let client = ca.issue(&ca.identity("a", "client"));
    let server_id = ca.identity("b", "server");
    let server = ca.issue(&server_id);
    let outcome = handshake(&client, vec![ca.identity("b", "other"), server_id], &server).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
}

#[tokio::test]
async fn wrong_server_identity_is_refused_by_the_client() {
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("a", "client"));
    let server = ca.issue(&ca.identity("b", "impostor"));
    let expected = ca.identity("b", "server");
    let outcome = handshake(&client, vec![expected.clone()], &server).await;
    match client_tls_error(&outcome) {
        TlsError::WrongIdentity { expected: e, found } => {
            assert_eq!(e, &vec![expected]);
            assert_eq!(found, &ca.identity("b", "impostor"));
        }
        other => panic!("expected WrongIdentity, got {other:?}"),
    }
    // The server learns that its certificate was refused.
    assert!(matches!(server_tls_error(&outcome), TlsError::PeerRefused(_)));
}

#[tokio::test]
async fn server_from_an_untrusted_root_is_refused() {
    let ca = TestCa::new("cluster.local");
    // A root with another name: the chain leads nowhere we know.
    let rogue = TestCa::new("rogue.example");
    let client = ca.issue(&ca.identity("a", "client"));
    let server_id = ca.identity("b", "server");
    let (chain, key) = rogue.issue_raw(&server_id, rogue.default_options());
    let server = WorkloadCertificate::new(chain, key, rogue.roots()).unwrap();
    let outcome = handshake(&client, vec![server_id], &server).await;
    let e = client_tls_error(&outcome);
    assert!(matches!(e, TlsError::UntrustedRoot), "{e:?}");
}

#[tokio::test]
async fn client_from_an_untrusted_root_is_refused() {
    let ca = TestCa::new("cluster.local");
    // A root with the same name as ours but another key: the chain seems to
    // lead to our root, and the signature check catches it.
    let rogue = TestCa::new("cluster.local");
    let client = rogue.issue(&ca.identity("a", "client"));
    let server_id = ca.identity("b", "server");
    let server = ca.issue(&server_id);
    // The rogue client trusts the real root, so only the server can refuse.
    let client =
        WorkloadCertificate::new(client.chain().to_vec(), client.key().clone_key(), ca.roots())
            .unwrap();
    let outcome = handshake(&client, vec![server_id], &server).await;
    assert!(matches!(server_tls_error(&outcome), TlsError::UntrustedRoot));
    assert!(matches!(client_tls_error(&outcome), TlsError::PeerRefused(_)));
}

fn shifted(ca: &TestCa, from_now: i64, life: Duration) -> testkit::LeafOptions {
    let now = SystemTime::now();
    let start = if from_now >= 0 {
        now + Duration::from_secs(from_now.unsigned_abs())
    } else {
        now - Duration::from_secs(from_now.unsigned_abs())
    };
    testkit::LeafOptions { not_before: start, not_after: start + life, ..ca.default_options() }
}

#[tokio::test]
async fn expired_certificates_are_refused_on_both_sides() {
    let ca = TestCa::new("cluster.local");
    let hour = Duration::from_secs(3600);
    let server_id = ca.identity("b", "server");
    let good_client = ca.issue(&ca.identity("a", "client"));
    let expired_server = ca.issue_with(&server_id, shifted(&ca, -7200, hour));
    let outcome = handshake(&good_client, vec![server_id.clone()], &expired_server).await;
    assert!(matches!(client_tls_error(&outcome), TlsError::Expired));

    let expired_client = ca.issue_with(&ca.identity("a", "client"), shifted(&ca, -7200, hour));
    let good_server = ca.issue(&server_id);
    let outcome = handshake(&expired_client, vec![server_id], &good_server).await;
    assert!(matches!(server_tls_error(&outcome), TlsError::Expired));
}

#[tokio::test]
async fn not_yet_valid_certificates_are_refused_on_both_sides() {
    let ca = TestCa::new("cluster.local");
    let hour = Duration::from_secs(3600);
    let server_id = ca.identity("b", "server");
    let good_client = ca.issue(&ca.identity("a", "client"));
    let future_server = ca.issue_with(&server_id, shifted(&ca, 7200, hour));
    let outcome = handshake(&good_client, vec![server_id.clone()], &future_server).await;
    assert!(matches!(client_tls_error(&outcome), TlsError::NotYetValid));

    let future_client = ca.issue_with(&ca.identity("a", "client"), shifted(&ca, 7200, hour));
    let good_server = ca.issue(&server_id);
    let outcome = handshake(&future_client, vec![server_id], &good_server).await;
    assert!(matches!(server_tls_error(&outcome), TlsError::NotYetValid));
}

#[tokio::test]
async fn client_from_a_foreign_trust_domain_is_refused() {
    let ca = TestCa::new("cluster.local");
    let foreign = TestCa::new("other.org");
    let both =
        TrustBundle::new(vec![ca.roots().certs()[0].clone(), foreign.roots().certs()[0].clone()])
            .unwrap();
    let (chain, key) =
        foreign.issue_raw(&foreign.identity("a", "client"), foreign.default_options());
    let client = WorkloadCertificate::new(chain, key, both.clone()).unwrap();
    let server_id = ca.identity("b", "server");
    let (chain, key) = ca.issue_raw(&server_id, ca.default_options());
    let server = WorkloadCertificate::new(chain, key, both).unwrap();
    let outcome = handshake(&client, vec![server_id], &server).await;
    match server_tls_error(&outcome) {
        TlsError::ForeignTrustDomain { found, allowed } => {
            assert_eq!(found.trust_domain(), "other.org");
            assert_eq!(allowed, &vec!["cluster.local".to_string()]);
        }
        other => panic!("expected ForeignTrustDomain, got {other:?}"),
    }
}

#[tokio::test]
async fn no_expected_identity_is_refused_before_dialing() {
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("a", "client"));
    let pool = Pool::new(PoolConfig::default(), Arc::new(TcpDialer));
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = pool.connect(&request(&client, vec![], addr, addr)).await.unwrap_err();
    assert!(matches!(err, ConnectError::NoExpectedIdentity(_)), "{err:?}");
}

/// Accepts any server certificate: lets a test client skip verification so
/// that only the server's checks are exercised.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn raw_client_against(
    server: &WorkloadCertificate,
    config: rustls::ClientConfig,
) -> Result<(), ServeError> {
    let (addr, served) = serve_one(server, H2Settings::default()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    // In TLS 1.3 the client finishes first; the server's verdict on the
    // client certificate arrives afterwards, so read to see the alert.
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let _ = tls.read(&mut buf).await;
    }
    verdict(served).await
}

#[tokio::test]
async fn missing_client_certificate_is_refused() {
    let ca = TestCa::new("cluster.local");
    let server = ca.issue(&ca.identity("b", "server"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let result = raw_client_against(&server, config).await;
    assert!(
        matches!(result, Err(ServeError::Tls { source: TlsError::MissingClientCertificate, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn tls12_is_refused() {
    let ca = TestCa::new("cluster.local");
    let server = ca.issue(&ca.identity("b", "server"));
    let client = ca.issue(&ca.identity("a", "client"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(client.chain().to_vec(), client.key().clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let result = raw_client_against(&server, config).await;
    match result {
        Err(ServeError::Tls {
            source: TlsError::Handshake(rustls::Error::PeerIncompatible(_)),
            ..
        }) => {}
        other => panic!("expected an incompatible-peer refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_instead_of_tls_is_an_error_not_a_hang() {
    let ca = TestCa::new("cluster.local");
    let server = ca.issue(&ca.identity("b", "server"));
    let settings = H2Settings { handshake_timeout: Duration::from_secs(2), ..Default::default() };
    let (addr, served) = serve_one(&server, settings).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let result = verdict(served).await;
    assert!(matches!(result, Err(ServeError::Tls { .. })), "{result:?}");

    // And a client that says nothing at all is cut off by the handshake timeout.
    let settings =
        H2Settings { handshake_timeout: Duration::from_millis(200), ..Default::default() };
    let (addr, served) = serve_one(&server, settings).await;
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = verdict(served).await;
    assert!(matches!(result, Err(ServeError::HandshakeTimeout(_))), "{result:?}");
}

#[tokio::test]
async fn aes_128_gcm_is_preferred_on_both_sides() {
    let ca = TestCa::new("cluster.local");
    let server_id = ca.identity("b", "server");
    let server = ca.issue(&server_id);
    let client = ca.issue(&ca.identity("a", "client"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(hbone::tls::server_config(&server, &[]).unwrap()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        hbone::tls::client_config(&client, &[server_id]).unwrap(),
    ));
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.unwrap()
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        connector.connect(name, tcp).await.unwrap()
    };
    let (served, connected) = tokio::join!(accept, connect);
    let suite = |s: Option<rustls::SupportedCipherSuite>| s.map(|s| s.suite());
    let expected = Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert_eq!(suite(connected.get_ref().1.negotiated_cipher_suite()), expected);
    assert_eq!(suite(served.get_ref().1.negotiated_cipher_suite()), expected);
}

/// Presents a fixed certificate and key, whether or not they belong together.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Verified chains are remembered per trust bundle (so a known chain skips
/// the chain check); the holder must still prove it has the key.
#[tokio::test]
async fn a_known_client_chain_presented_without_its_key_is_refused() {
    let ca = TestCa::with_intermediate("cluster.local");
    let server = ca.issue(&ca.identity("b", "server"));
    let client = ca.issue(&ca.identity("a", "client"));
    let thief = ca.issue(&ca.identity("a", "thief"));
    for _ in 0..2 {
        let outcome = handshake(&client, vec![server.identity().clone()], &server).await;
        assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let thief_key = provider.key_provider.load_private_key(thief.key().clone_key()).unwrap();
    let stolen = rustls::sign::CertifiedKey::new(client.chain().to_vec(), thief_key);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_cert_resolver(Arc::new(Presents(Arc::new(stolen))));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let result = raw_client_against(&server, config).await;
    assert!(matches!(result, Err(ServeError::Tls { .. })), "{result:?}");
    // And the rightful holder is still welcome.
    let outcome = handshake(&client, vec![server.identity().clone()], &server).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
}

/// A server chain accepted before is still matched against the identities
/// expected for each new destination.
#[tokio::test]
async fn a_known_server_chain_is_still_checked_for_the_expected_identity() {
    let ca = TestCa::new("cluster.local");
    let client = ca.issue(&ca.identity("a", "client"));
    let server = ca.issue(&ca.identity("b", "server"));
    let outcome = handshake(&client, vec![server.identity().clone()], &server).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
    let expected = ca.identity("b", "payments");
    let outcome = handshake(&client, vec![expected.clone()], &server).await;
    match client_tls_error(&outcome) {
        TlsError::WrongIdentity { expected: e, found } => {
            assert_eq!(e, &vec![expected]);
            assert_eq!(found, server.identity());
        }
        other => panic!("expected WrongIdentity, got {other:?}"),
    }
}
