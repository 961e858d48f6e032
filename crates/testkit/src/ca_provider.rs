//! A certificate provider for proxies under test: issues from a [`TestCa`]
//! with a chosen lifetime, counts what it issued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use hbone::WorkloadCertificate;
use mesh_core::Identity;
use proxy_core::certificates::{CertificateProvider, FetchError};

use crate::{LeafOptions, TestCa};

/// Issues certificates valid from a second ago for `lifetime_ms`.
pub struct TestCaProvider {
    /// The CA.
    pub ca: TestCa,
    /// Certificates issued so far.
    pub issued: AtomicUsize,
    /// Lifetime of the next certificates, in milliseconds (default 1 h).
    pub lifetime_ms: AtomicU64,
}

impl TestCaProvider {
    /// A provider over a fresh CA for `cluster.local`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            ca: TestCa::new("cluster.local"),
            issued: AtomicUsize::new(0),
            lifetime_ms: AtomicU64::new(3_600_000),
        })
    }
}

impl CertificateProvider for TestCaProvider {
    fn fetch<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>> {
        Box::pin(async move {
            self.issued.fetch_add(1, Ordering::SeqCst);
            let now = SystemTime::now();
            let life = Duration::from_millis(self.lifetime_ms.load(Ordering::SeqCst));
            Ok(self.ca.issue_with(
                identity,
                LeafOptions {
                    not_before: now - Duration::from_secs(1),
                    not_after: now + life,
                    uris: None,
                },
            ))
        })
    }
}
