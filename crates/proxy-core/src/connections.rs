//! Every open proxied connection: listed on the admin endpoint, counted so
//! leaks show, and drained on shutdown or when a pod leaves.
//!
//! Each connection registers and holds a [`ConnectionGuard`]; dropping the
//! guard removes it. Draining waits for the matching connections to end
//! and, at the deadline, cancels the token they watch, which ends them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Which way a connection goes, seen from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a local workload to somewhere.
    Outbound,
    /// From somewhere to a local workload.
    Inbound,
}

/// What is shown about one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Which way.
    pub direction: Direction,
    /// The local workload (pod uid) the connection belongs to.
    pub workload: String,
    /// The original source.
    pub source: SocketAddr,
    /// The original destination.
    pub destination: SocketAddr,
    /// Where the bytes actually go (a pod's or waypoint's HBONE address, or
    /// the destination itself).
    pub upstream: SocketAddr,
    /// The source's SPIFFE identity, when known.
    pub source_identity: Option<String>,
    /// The destination's SPIFFE identity, when known.
    pub destination_identity: Option<String>,
    /// `HBONE` or `TCP`.
    pub protocol: &'static str,
    /// When it opened.
    #[serde(with = "unix_seconds")]
    pub opened: SystemTime,
}

/// All open connections.
#[derive(Debug)]
pub struct ConnectionTracker {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, ConnectionInfo>>,
    /// Bumped whenever a connection closes.
    closed: watch::Sender<u64>,
}

/// Registration of one open connection.
#[derive(Debug)]
pub struct ConnectionGuard {
    tracker: Arc<ConnectionTracker>,
    id: u64,
}

impl Default for ConnectionTracker {
    fn default() -> Self {
        Self { next_id: AtomicU64::new(0), open: Mutex::default(), closed: watch::Sender::new(0) }
    }
}

impl ConnectionTracker {
    /// An empty tracker.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection until the guard is dropped.
    pub fn register(self: &Arc<Self>, info: ConnectionInfo) -> ConnectionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, info);
        ConnectionGuard { tracker: self.clone(), id }
    }

    /// Open connections, oldest first.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let open = self.lock();
        let mut all: Vec<_> = open.iter().map(|(id, c)| (*id, c.clone())).collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// How many are open for one workload.
    pub fn count_for(&self, workload: &str) -> usize {
        self.lock().values().filter(|c| c.workload == workload).count()
    }

    /// Waits until no connection of `workload` (every connection when
    /// `None`) is open, or until `deadline`; then cancels `cancel`, which
    /// ends the rest. Returns how many were still open at the deadline.
    pub async fn drain(
        &self,
        workload: Option<&str>,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> usize {
        let remaining = || match workload {
            Some(w) => self.count_for(w),
            None => self.count(),
        };
        let mut closed = self.closed.subscribe();
        let wait = async {
            while remaining() > 0 {
                if closed.changed().await.is_err() {
                    return;
                }
            }
        };
        let left = match tokio::time::timeout(deadline, wait).await {
            Ok(()) => 0,
            Err(_) => remaining(),
        };
        cancel.cancel();
        left
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, ConnectionInfo>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.id);
        self.tracker.closed.send_modify(|n| *n += 1);
    }
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info(workload: &str) -> ConnectionInfo {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        ConnectionInfo {
            direction: Direction::Inbound,
            workload: workload.into(),
            source: addr,
            destination: addr,
            upstream: addr,
            source_identity: None,
            destination_identity: None,
            protocol: "TCP",
            opened: SystemTime::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_pods_connections_then_cancels() {
        let tracker = ConnectionTracker::new();
        let a = tracker.register(info("a"));
        let b = tracker.register(info("b"));
        assert_eq!(tracker.count(), 2);
        let cancel = CancellationToken::new();
        let t = tracker.clone();
        let c = cancel.clone();
        let drain =
            tokio::spawn(async move { t.drain(Some("a"), Duration::from_secs(5), &c).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished(), "a's connection is still open");
        drop(a);
        assert_eq!(drain.await.unwrap(), 0);
        assert_eq!(tracker.list().len(), 1);

        // b never closes: the deadline cancels it.
        let cancel = CancellationToken::new();
        let left = tracker.drain(None, Duration::from_secs(5), &cancel).await;
        assert_eq!(left, 1);
        assert!(cancel.is_cancelled());
        drop(b);
        assert_eq!(tracker.count(), 0);
    }
}
