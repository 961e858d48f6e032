//! Mutual TLS for HBONE: TLS 1.3 only, ALPN `h2`, client certificates
//! required both ways, peers identified by SPIFFE URI SANs.

mod error;
mod resumption;
mod server_configs;
mod verified;
mod verify;
#[cfg(test)]
mod verify_props;

use std::sync::Arc;
use std::time::Duration;

use mesh_core::Identity;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::cert::{TrustBundle, WorkloadCertificate, identity_of};

pub use error::TlsError;
pub use resumption::MAX_TICKET_LIFETIME;
pub use resumption::check_resumed;
pub use server_configs::ServerConfigs;
pub(crate) use verified::VerifiedChains;

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// ring, with AES-128-GCM preferred. The default order puts AES-256-GCM
/// first; 128-bit AES is as strong as the rest of the handshake (P-256,
/// X25519) and takes 10 rounds instead of 14 on every byte both ways
/// (BoringSSL, and so Envoy, prefer it too when AES is in hardware).
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Client configuration presenting `cert`, accepting a server only if it
/// chains to `cert`'s roots and its identity is one of `expected`.
///
/// An empty `expected` list is refused: a tunnel that would accept anyone is
/// never what the caller meant.
pub fn client_config(
    cert: &WorkloadCertificate,
    expected: &[Identity],
) -> Result<ClientConfig, TlsError> {
    build_client_config(cert.roots(), Some(cert), expected, false)
}

/// Like [`client_config`], remembering sessions to resume them: one per
/// server name, in this configuration only (see `tls/resumption.rs` for why
/// that keeps the identity check sound). A caller resuming must check each
/// resumed connection with [`check_resumed`]; the pool does.
pub fn client_config_with_resumption(
    cert: &WorkloadCertificate,
    expected: &[Identity],
) -> Result<ClientConfig, TlsError> {
    build_client_config(cert.roots(), Some(cert), expected, true)
}

/// Client configuration for a caller that has no mesh certificate yet (a
/// proxy bootstrapping against the control plane with a token): verifies
/// the server like [`client_config`] but presents no certificate.
pub fn client_config_without_cert(
    roots: &TrustBundle,
    expected: &[Identity],
) -> Result<ClientConfig, TlsError> {
    build_client_config(roots, None, expected, false)
}

fn build_client_config(
    roots: &TrustBundle,
    cert: Option<&WorkloadCertificate>,
    expected: &[Identity],
    resume: bool,
) -> Result<ClientConfig, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentity);
    }
    let provider = provider();
    let verifier = verify::SpiffeServerVerifier::new(
        roots.store().clone(),
        roots.verified().clone(),
        expected.to_vec(),
        provider.signature_verification_algorithms,
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain().to_vec(), cert.key().clone_key())
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Server names only key the session store (peers are told apart by
    // identity): never send one.
    config.enable_sni = false;
    // A resumed session skips certificate verification, so it would skip
    // the identity check too: only sound with a store scoped to this
    // configuration's expected identities (`tls/resumption.rs`).
    config.resumption = if resume {
        rustls::client::Resumption::store(Arc::new(resumption::SessionStore::default()))
            .tls12_resumption(rustls::client::Tls12Resumption::Disabled)
    } else {
        rustls::client::Resumption::disabled()
    };
    Ok(config)
}

/// Server configuration presenting `cert` and requiring a client certificate
/// that chains to `cert`'s roots, from `cert`'s own trust domain or one of
/// `extra_trust_domains`.
pub fn server_config(
    cert: &WorkloadCertificate,
    extra_trust_domains: &[String],
) -> Result<ServerConfig, TlsError> {
    build_server_config(cert, extra_trust_domains, true)
}

/// Like [`server_config`], and issuing one session ticket per handshake,
/// valid for `ticket_lifetime` (at most [`MAX_TICKET_LIFETIME`]) and never
/// past `cert`'s expiry. Tickets are encrypted with keys of this
/// configuration only: share one configuration between the servers of one
/// identity for their clients to resume across them. Resumed connections are
/// checked by [`crate::HboneServer`] (the client certificate remembered in the
/// session must still be valid).
pub fn server_config_with_resumption(
    cert: &WorkloadCertificate,
    extra_trust_domains: &[String],
    ticket_lifetime: Duration,
) -> Result<ServerConfig, TlsError> {
    let mut config = build_server_config(cert, extra_trust_domains, true)?;
    config.ticketer =
        Arc::new(resumption::SessionTickets::new(ticket_lifetime, cert.info().not_after)?);
    config.send_tls13_tickets = 1;
    Ok(config)
}

/// Like [`server_config`], but a client may also connect without a
/// certificate (a certificate it does present is verified all the same).
/// For the control plane's port, where proxies bootstrap with a token
/// before they hold a mesh certificate; never for HBONE.
pub fn server_config_optional_client_cert(
    cert: &WorkloadCertificate,
    extra_trust_domains: &[String],
) -> Result<ServerConfig, TlsError> {
    build_server_config(cert, extra_trust_domains, false)
}

fn build_server_config(
    cert: &WorkloadCertificate,
    extra_trust_domains: &[String],
    client_cert_required: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder =
        WebPkiClientVerifier::builder_with_provider(cert.roots().store().clone(), provider.clone());
    let builder = if client_cert_required { builder } else { builder.allow_unauthenticated() };
    let webpki = builder.build().map_err(TlsError::Verifier)?;
    let mut trust_domains = vec![cert.identity().trust_domain().to_string()];
    trust_domains.extend(extra_trust_domains.iter().cloned());
    let verifier =
        verify::SpiffeClientVerifier::new(webpki, cert.roots().verified().clone(), trust_domains);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(cert.chain().to_vec(), cert.key().clone_key())
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No tickets or session cache unless asked for
    // (`server_config_with_resumption`).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The verified identity of the peer of an established connection; an
/// error when it presented no certificate.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<Identity, TlsError> {
    let leaf = certs.and_then(|c| c.first()).ok_or(TlsError::MissingClientCertificate)?;
    identity_of(leaf).map_err(|e| TlsError::BadPeerCertificate(e.to_string()))
}

/// Checks the negotiated application protocol is `h2` (or that none was
/// negotiated, for peers that speak HTTP/2 with prior knowledge).
pub fn check_alpn(negotiated: Option<&[u8]>) -> Result<(), TlsError> {
    match negotiated {
        None => Ok(()),
        Some(p) if p == ALPN_H2 => Ok(()),
        Some(p) => Err(TlsError::WrongAlpn(String::from_utf8_lossy(p).into_owned())),
    }
}
