//! Locking the crate's small shared maps.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering it if a holder panicked: nothing this crate does
/// under its locks leaves the data half-written (entries are inserted and
/// removed whole), so the value is still sound.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
