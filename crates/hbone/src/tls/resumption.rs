//! TLS 1.3 session resumption between HBONE peers, scoped so that a resumed
//! session proves exactly what its full handshake proved.
//!
//! Resuming skips both handshake signatures and both certificate checks
//! (about 0.2 ms of serial crypto per new connection on our machines, and
//! the CPU on both sides); the X25519 exchange stays, so every connection
//! still gets fresh keys. Skipping the certificate checks also skips our
//! identity checks, which is why Istio's ztunnel turns resumption off. It is
//! safe here because of how sessions are scoped:
//! - a client keeps sessions in its `ClientConfig`, and configurations are
//!   built per (source certificate, expected identities)
//!   (`client/configs.rs`): a session won against one set of identities is
//!   never offered where another is expected, and a rotated client
//!   certificate starts with no session at all;
//! - a server encrypts tickets with keys of its `ServerConfig`, built per
//!   certificate: a server proving another identity, or this one after a
//!   rotation, cannot read them, and the client falls back to a full
//!   handshake in the same round trip;
//! - a ticket is accepted for at most its lifetime (and never past the
//!   server certificate's expiry), and after a resumed handshake both sides
//!   check the peer certificate remembered in the session is still valid,
//!   and the client that its identity is still one it expects
//!   ([`check_resumed`]).
//!
//! Authorization is unaffected: the server evaluates policy on every
//! CONNECT with the peer identity, resumed or not.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_core::Identity;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::server::ProducesTickets;
use rustls::{CommonState, HandshakeKind, NamedGroup};
use rustls_pki_types::ServerName;

use super::TlsError;
use crate::cert::parse_certificate;
use crate::sync::lock;

/// The longest ticket lifetime TLS 1.3 allows (RFC 8446, 4.6.1).
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Servers one client configuration remembers a session for; past this the
/// store starts over (the next connection to each does a full handshake).
const MAX_SERVERS: usize = 256;

/// Bytes in front of each ticket's plaintext: when it was issued.
const ISSUED_LEN: usize = 8;

// === impl SessionTickets ===

/// The server's ticket maker: rustls' rotating AEAD keys, with each ticket
/// stamped with its issue time so it is refused after `lifetime` and after
/// the server certificate expires, whatever the client claims.
pub(crate) struct SessionTickets {
    keys: Arc<dyn ProducesTickets>,
    lifetime: Duration,
    not_after: SystemTime,
}

impl SessionTickets {
    /// Tickets valid for `lifetime` (at most [`MAX_TICKET_LIFETIME`]) and
    /// never past `not_after`, the server certificate's expiry.
    pub(crate) fn new(lifetime: Duration, not_after: SystemTime) -> Result<Self, TlsError> {
        let keys = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
        Ok(Self { keys, lifetime: lifetime.min(MAX_TICKET_LIFETIME), not_after })
    }

    fn lifetime_at(&self, now: SystemTime) -> Duration {
        let left = self.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        self.lifetime.min(left)
    }

    fn seal(&self, plain: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        let issued = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let mut stamped = Vec::with_capacity(ISSUED_LEN + plain.len());
        stamped.extend_from_slice(&issued.to_be_bytes());
        stamped.extend_from_slice(plain);
        self.keys.encrypt(&stamped)
    }

    fn open(&self, cipher: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        let mut stamped = self.keys.decrypt(cipher)?;
        let issued: [u8; ISSUED_LEN] = stamped.get(..ISSUED_LEN)?.try_into().ok()?;
        let issued =
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::from_be_bytes(issued)))?;
        let age = now.duration_since(issued).unwrap_or(Duration::ZERO);
        if age > self.lifetime || now >= self.not_after {
            return None;
        }
        stamped.drain(..ISSUED_LEN);
        Some(stamped)
    }
}

impl ProducesTickets for SessionTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.lifetime_at(SystemTime::now()).as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, SystemTime::now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, SystemTime::now())
    }
}

impl fmt::Debug for SessionTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTickets")
            .field("lifetime", &self.lifetime)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

// === impl SessionStore ===

/// A client's remembered sessions: the latest ticket per server, and the
/// key-exchange group it chose. One ticket is enough because our servers
/// issue one per handshake, and it bounds the store to one session (a few
/// KiB: both certificate chains) per server.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    servers: Mutex<HashMap<ServerName<'static>, Remembered>>,
}

#[derive(Debug, Default)]
struct Remembered {
    group: Option<NamedGroup>,
    ticket: Option<Tls13ClientSessionValue>,
}

impl SessionStore {
    fn update(&self, server: ServerName<'static>, change: impl FnOnce(&mut Remembered)) {
        let mut servers = lock(&self.servers);
        if servers.len() >= MAX_SERVERS && !servers.contains_key(&server) {
            servers.clear();
        }
        change(servers.entry(server).or_default());
    }
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, server: ServerName<'static>, group: NamedGroup) {
        self.update(server, |r| r.group = Some(group));
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<NamedGroup> {
        lock(&self.servers).get(server).and_then(|r| r.group)
    }

    // HBONE is TLS 1.3 only: nothing of TLS 1.2 is kept.
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, server: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.update(server, |r| r.ticket = Some(value));
    }

    fn take_tls13_ticket(&self, server: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        lock(&self.servers).get_mut(server).and_then(|r| r.ticket.take())
    }
}

// === checks after the handshake ===

/// If `conn` resumed a session, checks the peer certificate remembered in
/// the session is valid now and, for a client, that its identity is one of
/// `expected`, and returns that identity; `None` after a full handshake,
/// which the verifiers checked already.
pub fn check_resumed(
    conn: &CommonState,
    expected: Option<&[Identity]>,
) -> Result<Option<Identity>, TlsError> {
    if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
        return Ok(None);
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| TlsError::BadPeerCertificate("none in the resumed session".into()))?;
    let info = parse_certificate(leaf).map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    check_validity(info.not_before, info.not_after, SystemTime::now())?;
    if let Some(expected) = expected
        && !expected.contains(&info.identity)
    {
        return Err(TlsError::WrongIdentity { expected: expected.to_vec(), found: info.identity });
    }
    Ok(Some(info.identity))
}

fn check_validity(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
) -> Result<(), TlsError> {
    if now < not_before {
        return Err(TlsError::NotYetValid);
    }
    if now > not_after {
        return Err(TlsError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_ticket_opens_within_its_lifetime_only() {
        let tickets = SessionTickets::new(HOUR, at(10 * 3600)).unwrap();
        let sealed = tickets.seal(b"session", at(0)).unwrap();
        assert_eq!(tickets.open(&sealed, at(0)).as_deref(), Some(&b"session"[..]));
        assert_eq!(tickets.open(&sealed, at(3600)).as_deref(), Some(&b"session"[..]));
        assert_eq!(tickets.open(&sealed, at(3601)), None, "older than its lifetime");
    }

    #[test]
    fn no_ticket_opens_once_the_server_certificate_expired() {
        let tickets = SessionTickets::new(HOUR, at(600)).unwrap();
        let sealed = tickets.seal(b"session", at(0)).unwrap();
        assert!(tickets.open(&sealed, at(599)).is_some());
        assert_eq!(tickets.open(&sealed, at(600)), None);
        assert_eq!(tickets.lifetime_at(at(0)), Duration::from_secs(600), "capped by the cert");
        assert_eq!(tickets.lifetime_at(at(700)), Duration::ZERO);
    }

    #[test]
    fn tickets_of_another_server_config_do_not_open() {
        let ours = SessionTickets::new(HOUR, at(7200)).unwrap();
        let theirs = SessionTickets::new(HOUR, at(7200)).unwrap();
        let sealed = theirs.seal(b"session", at(0)).unwrap();
        assert_eq!(ours.open(&sealed, at(1)), None);
        let mut tampered = ours.seal(b"session", at(0)).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(ours.open(&tampered, at(1)), None);
        assert_eq!(ours.open(b"short", at(1)), None);
    }

    #[test]
    fn lifetime_is_capped_at_what_tls_allows() {
        let tickets =
            SessionTickets::new(MAX_TICKET_LIFETIME * 2, at(u64::from(u32::MAX))).unwrap();
        assert_eq!(tickets.lifetime_at(at(0)), MAX_TICKET_LIFETIME);
    }

    #[test]
    fn validity_is_checked_both_ways() {
        assert!(check_validity(at(10), at(20), at(15)).is_ok());
        assert!(matches!(check_validity(at(10), at(20), at(21)), Err(TlsError::Expired)));
        assert!(matches!(check_validity(at(10), at(20), at(9)), Err(TlsError::NotYetValid)));
    }

    #[test]
    fn the_store_keeps_one_ticket_per_server_and_is_bounded() {
        let store = SessionStore::default();
        let name = |i: usize| ServerName::try_from(format!("node-{i}.example")).unwrap();
        store.set_kx_hint(name(0), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name(0)), Some(NamedGroup::X25519));
        assert!(store.take_tls13_ticket(&name(0)).is_none());
        for i in 0..=MAX_SERVERS {
            store.set_kx_hint(name(i), NamedGroup::secp256r1);
        }
        assert!(lock(&store.servers).len() <= MAX_SERVERS);
    }
}
