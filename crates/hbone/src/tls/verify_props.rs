//! The verified-chain cache never changes a verdict: for any sequence of
//! chains and times, a verifier that remembers chains accepts exactly what
//! a verifier that checks every chain from scratch accepts (bolero; brief
//! inside `cargo test`, `cargo bolero test -p hbone --lib
//! tls::verify_props` for long runs).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::verified::VerifiedChains;
use super::verify::SpiffeServerVerifier;

struct Pool {
    roots: Arc<RootCertStore>,
    expected: mesh_core::Identity,
    /// (leaf, intermediates)
    chains: Vec<(CertificateDer<'static>, Vec<CertificateDer<'static>>)>,
    times: Vec<UnixTime>,
}

fn pool() -> Pool {
    let now = SystemTime::now();
    let trusted = testkit::TestCa::new("cluster.local");
    let other = testkit::TestCa::new("cluster.local");
    let expected: mesh_core::Identity = "spiffe://cluster.local/ns/a/sa/x".parse().unwrap();
    let stranger: mesh_core::Identity = "spiffe://cluster.local/ns/a/sa/y".parse().unwrap();
    let shift = |offset: i64| {
        if offset < 0 {
            now - Duration::from_secs(offset.unsigned_abs())
        } else {
            now + Duration::from_secs(offset.unsigned_abs())
        }
    };
    let window = |from: i64, hours: u64| testkit::LeafOptions {
        not_before: shift(from),
        not_after: shift(from) + Duration::from_secs(hours * 3600),
        ..trusted.default_options()
    };
    let der = |chain: &[CertificateDer<'static>]| (chain[0].clone(), chain[1..].to_vec());
    let good = der(trusted.issue(&expected).chain());
    let mut truncated = good.0.to_vec();
    truncated.truncate(truncated.len() / 2);
    let chains = vec![
        good.clone(),
        der(trusted.issue_with(&expected, window(-7200, 1)).chain()), // expired an hour ago
        der(trusted.issue_with(&expected, window(3600, 24)).chain()), // valid from in an hour
        der(other.issue(&expected).chain()),                          // another CA
        der(trusted.issue(&stranger).chain()),                        // not the expected identity
        (CertificateDer::from(truncated), Vec::new()),                // garbage
        (good.0.clone(), vec![good.0.clone()]),                       // a bogus intermediate
    ];
    let mut roots = RootCertStore::empty();
    let root = CertificateDer::from_pem_slice(trusted.root_pem().as_bytes()).unwrap();
    roots.add(root).unwrap();
    let at = |offset: i64| {
        UnixTime::since_unix_epoch(shift(offset).duration_since(SystemTime::UNIX_EPOCH).unwrap())
    };
    Pool {
        roots: Arc::new(roots),
        expected,
        chains,
        times: vec![at(0), at(-86_400), at(2 * 86_400), at(7200)],
    }
}

fn verifier(pool: &Pool, cache: Arc<VerifiedChains>) -> SpiffeServerVerifier {
    SpiffeServerVerifier::new(
        pool.roots.clone(),
        cache,
        vec![pool.expected.clone()],
        super::provider().signature_verification_algorithms,
    )
}

#[test]
fn the_cache_accepts_exactly_what_a_full_check_accepts() {
    let pool = pool();
    let name = ServerName::try_from("10.0.0.1").unwrap();
    bolero::check!().with_iterations(300).with_type::<Vec<(u8, u8)>>().for_each(|steps| {
        let cached = verifier(&pool, Arc::new(VerifiedChains::default()));
        for (chain, time) in steps.iter().take(24) {
            let (leaf, intermediates) = &pool.chains[usize::from(*chain) % pool.chains.len()];
            let now = pool.times[usize::from(*time) % pool.times.len()];
            let remembered = cached.verify_server_cert(leaf, intermediates, &name, &[], now);
            let fresh = verifier(&pool, Arc::new(VerifiedChains::default())).verify_server_cert(
                leaf,
                intermediates,
                &name,
                &[],
                now,
            );
            assert_eq!(
                remembered.is_ok(),
                fresh.is_ok(),
                "chain {chain} at time {time}: {remembered:?} vs {fresh:?}"
            );
        }
    });
}
