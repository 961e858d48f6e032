//! Readiness: a proxy is ready when nothing it waits for is pending.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Named conditions still pending.
#[derive(Debug, Default)]
pub struct Readiness {
    pending: Mutex<BTreeMap<u64, String>>,
    next: Mutex<u64>,
}

/// One pending condition; dropping it marks it met.
#[derive(Debug)]
pub struct ReadinessBlock {
    owner: Arc<Readiness>,
    id: u64,
}

impl Readiness {
    /// Nothing pending.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a pending condition, named for the readiness report.
    pub fn block(self: &Arc<Self>, name: &str) -> ReadinessBlock {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        self.lock().insert(id, name.to_string());
        ReadinessBlock { owner: self.clone(), id }
    }

    /// What is still pending (empty when ready).
    pub fn pending(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ReadinessBlock {
    fn drop(&mut self) {
        self.owner.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_block_is_dropped() {
        let r = Readiness::new();
        let a = r.block("xds");
        let b = r.block("certificates");
        assert_eq!(r.pending(), ["xds", "certificates"]);
        drop(a);
        assert_eq!(r.pending(), ["certificates"]);
        drop(b);
        assert!(r.pending().is_empty());
    }
}
