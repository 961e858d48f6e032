#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use hbone::WorkloadCertificate;
use mesh_core::Identity;
use testkit::{LeafOptions, TestCa};

use super::*;

/// Issues 1-hour certificates from a test CA; can be told to fail.
struct FakeCa {
    ca: TestCa,
    calls: AtomicUsize,
    failing: AtomicBool,
}

impl FakeCa {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ca: TestCa::new("cluster.local"),
            calls: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        })
    }
}

impl CertificateProvider for FakeCa {
    fn fetch<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(FetchError::Refused {
                    identity: identity.clone(),
                    status: tonic::Status::unavailable("CA down for the test"),
                });
            }
            let now = SystemTime::now();
            Ok(self.ca.issue_with(
                identity,
                LeafOptions {
                    not_before: now - Duration::from_secs(1),
                    not_after: now + Duration::from_secs(3599),
                    uris: None,
                },
            ))
        })
    }
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "apps", sa).unwrap()
}

#[tokio::test(start_paused = true)]
async fn issues_rotates_at_half_life_and_drops_with_the_last_lease() {
    let ca = FakeCa::new();
    let certs = WorkloadCertificates::new(ca.clone(), CertificateSettings::default());
    let lease_a = certs.acquire(&id("web"));
    let lease_b = certs.acquire(&id("web"));
    let first = certs.get(&id("web")).await.unwrap();
    assert_eq!(first.identity(), &id("web"));
    assert_eq!(ca.calls.load(Ordering::SeqCst), 1, "two leases share one certificate");

    let mut rx = certs.watch(&id("web")).unwrap();
    rx.mark_unchanged();
    // Half of the one-hour life later, a new certificate replaces it.
    tokio::time::sleep(Duration::from_secs(30 * 60 + 1)).await;
    rx.changed().await.unwrap();
    let state = rx.borrow().clone();
    assert_eq!(state.issued, 2);
    assert_ne!(state.current.unwrap().info().serial, first.info().serial);

    drop(lease_a);
    assert!(certs.watch(&id("web")).is_some(), "one pod still needs it");
    drop(lease_b);
    assert!(certs.watch(&id("web")).is_none(), "no certificate for identities that left");
    assert_eq!(certs.get(&id("web")).await.unwrap_err(), Unavailable::NotTracked(id("web")));
    let calls = ca.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(ca.calls.load(Ordering::SeqCst), calls, "no renewals after release");
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff_and_reported() {
    let ca = FakeCa::new();
    ca.failing.store(true, Ordering::SeqCst);
    let settings =
        CertificateSettings { wait_timeout: Duration::from_secs(2), ..Default::default() };
    let certs = WorkloadCertificates::new(ca.clone(), settings);
    let _lease = certs.acquire(&id("api"));
    let err = certs.get(&id("api")).await.unwrap_err();
    let Unavailable::NotYet { last_error: Some(message), .. } = &err else { panic!("{err:?}") };
    assert!(message.contains("CA down for the test"), "{message}");
    assert_eq!(certs.pending(), 1);
    let attempts = ca.calls.load(Ordering::SeqCst);
    assert!((2..=6).contains(&attempts), "backoff, not a spin: {attempts} attempts in 2 s");

    ca.failing.store(false, Ordering::SeqCst);
    let cert = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(c) = certs.get(&id("api")).await {
                return c;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(cert.identity(), &id("api"));
    assert_eq!(certs.pending(), 0);
    let status = &certs.statuses()[0];
    assert_eq!(status.leases, 1);
    assert!(status.state.last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_keeps_the_current_certificate() {
    let ca = FakeCa::new();
    let certs = WorkloadCertificates::new(ca.clone(), CertificateSettings::default());
    let _lease = certs.acquire(&id("db"));
    let first = certs.get(&id("db")).await.unwrap();
    ca.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30 * 60 + 5)).await;
    let still = certs.get(&id("db")).await.unwrap();
    assert_eq!(still.info().serial, first.info().serial);
    assert!(certs.statuses()[0].state.last_error.is_some());
}
