//! Certificate chains already verified against one trust bundle.
//!
//! Checking a peer's chain costs an ECDSA P-256 verification per
//! certificate it carries (~80 µs each here), on both sides of every new
//! HBONE connection, and most connections present a chain seen before: a
//! node proxy's peers are the same few workload certificates over and over.
//! The verdict is a pure function of the chain's bytes, the roots, the key
//! usage asked for and the time, so it is remembered per
//! (usage, exact chain bytes) with the time window in which it holds (the
//! intersection of the chain's validity periods). A remembered chain still
//! has its holder prove possession of the key in every handshake (the
//! CertificateVerify signature is always checked), and its identity is
//! still matched against what the caller expects.
//!
//! The cache lives in the [`TrustBundle`](crate::cert::TrustBundle): new
//! roots bring an empty cache. Only successes are remembered. Nothing here
//! knows about revocation; if CRLs are ever checked, entries must be dropped
//! when one arrives.

use std::collections::HashMap;
use std::sync::Mutex;

use mesh_core::Identity;
use ring::digest;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// At most this many chains are remembered; when full, expired entries go
/// first, then everything (a node proxy sees a few dozen chains).
const CAPACITY: usize = 1024;

/// Which check a chain passed: the extended key usage differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Presented by a server (checked by a client).
    Server,
    /// Presented by a client (checked by a server).
    Client,
}

/// The cache key: SHA-256 over the usage and every certificate, each
/// length-prefixed so no two different chains share an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ChainKey([u8; 32]);

impl ChainKey {
    pub(crate) fn new(
        usage: Usage,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Self {
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(&[usage as u8]);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            hash.update(&(cert.len() as u64).to_be_bytes());
            hash.update(cert.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(hash.finish().as_ref());
        Self(key)
    }
}

#[derive(Debug, Clone)]
struct Verified {
    identity: Identity,
    /// Seconds since the epoch: the latest start of validity in the chain.
    from: u64,
    /// Seconds since the epoch: the earliest end of validity in the chain.
    until: u64,
}

/// Chains verified against one set of roots. Shared by every TLS
/// configuration built from the same [`TrustBundle`](crate::cert::TrustBundle).
#[derive(Default)]
pub(crate) struct VerifiedChains {
    entries: Mutex<HashMap<ChainKey, Verified>>,
}

impl std::fmt::Debug for VerifiedChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedChains").field("entries", &self.lock().len()).finish()
    }
}

impl VerifiedChains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChainKey, Verified>> {
        crate::sync::lock(&self.entries)
    }

    /// The identity of a chain verified before, if `now` is inside the
    /// window its verification holds for.
    pub(crate) fn lookup(&self, key: &ChainKey, now: UnixTime) -> Option<Identity> {
        let now = now.as_secs();
        let entries = self.lock();
        let verified = entries.get(key)?;
        (verified.from <= now && now <= verified.until).then(|| verified.identity.clone())
    }

    /// Remembers a chain the full check just accepted, with the identity it
    /// carries. A chain whose validity cannot be read is not remembered.
    pub(crate) fn remember(
        &self,
        key: ChainKey,
        identity: Identity,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) {
        let Some((from, until)) = validity_window(end_entity, intermediates) else {
            return;
        };
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            let now = now.as_secs();
            entries.retain(|_, v| v.until >= now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, Verified { identity, from, until });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The intersection of every certificate's validity period, in seconds
/// since the epoch; `None` if one cannot be parsed or the periods do not
/// overlap (the full check would have refused such a chain anyway).
fn validity_window(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(u64, u64)> {
    let mut window = (0u64, u64::MAX);
    for der in std::iter::once(end_entity).chain(intermediates) {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let validity = cert.validity();
        let from = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let until = u64::try_from(validity.not_after.timestamp()).ok()?;
        window = (window.0.max(from), window.1.min(until));
    }
    (window.0 <= window.1).then_some(window)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const START: u64 = 1_790_000_000;
    const DAY: u64 = 86_400;

    /// A self-signed certificate for `identity`, valid for one day from
    /// `START` (testkit's CA would be another copy of this crate).
    fn cert(identity: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        let uri = rcgen::string::Ia5String::try_from(identity).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let start = std::time::UNIX_EPOCH + Duration::from_secs(START);
        params.not_before = start.into();
        params.not_after = (start + Duration::from_secs(DAY)).into();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    #[test]
    fn keys_differ_by_usage_and_by_every_byte_of_the_chain() {
        let (a, b) = (cert("spiffe://td/ns/n/sa/a"), cert("spiffe://td/ns/n/sa/b"));
        let server = ChainKey::new(Usage::Server, &a, &[]);
        assert_eq!(server, ChainKey::new(Usage::Server, &a, &[]));
        assert_ne!(server, ChainKey::new(Usage::Client, &a, &[]));
        assert_ne!(server, ChainKey::new(Usage::Server, &b, &[]));
        assert_ne!(server, ChainKey::new(Usage::Server, &a, std::slice::from_ref(&b)));
        let mut tampered = a.as_ref().to_vec();
        tampered[40] ^= 1;
        assert_ne!(server, ChainKey::new(Usage::Server, &CertificateDer::from(tampered), &[]));
    }

    #[test]
    fn a_remembered_chain_holds_only_inside_its_validity() {
        let a = cert("spiffe://td/ns/n/sa/a");
        let chains = VerifiedChains::default();
        let key = ChainKey::new(Usage::Server, &a, &[]);
        let now = at(START + 60);
        assert_eq!(chains.lookup(&key, now), None, "nothing before it was verified");
        chains.remember(key, id("spiffe://td/ns/n/sa/a"), &a, &[], now);
        assert_eq!(chains.lookup(&key, now), Some(id("spiffe://td/ns/n/sa/a")));
        assert_eq!(chains.lookup(&key, at(START + DAY + 1)), None, "expired: full check again");
        assert_eq!(chains.lookup(&key, at(START - 1)), None, "not yet valid: full check again");
        let as_client = ChainKey::new(Usage::Client, &a, &[]);
        assert_eq!(chains.lookup(&as_client, now), None, "accepted from a server only");
    }

    #[test]
    fn the_window_is_the_intersection_of_the_chain() {
        let a = cert("spiffe://td/ns/n/sa/a");
        // The same certificate twice: the window is its own.
        assert_eq!(validity_window(&a, std::slice::from_ref(&a)), Some((START, START + DAY)));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert_eq!(validity_window(&a, &[garbage]), None);
    }

    #[test]
    fn unreadable_chains_are_not_remembered_and_the_cache_stays_bounded() {
        let a = cert("spiffe://td/ns/n/sa/a");
        let chains = VerifiedChains::default();
        let now = at(START + 1);
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        let key = ChainKey::new(Usage::Client, &garbage, &[]);
        chains.remember(key, id("spiffe://td/ns/n/sa/a"), &garbage, &[], now);
        assert_eq!(chains.len(), 0);
        for i in 0..CAPACITY + 10 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            chains.remember(ChainKey(key), id("spiffe://td/ns/n/sa/a"), &a, &[], now);
        }
        assert!(chains.len() <= CAPACITY, "{} entries", chains.len());
        assert!(chains.len() >= 1, "the newest entry stays");
    }
}
