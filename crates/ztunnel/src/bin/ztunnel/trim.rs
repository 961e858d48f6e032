//! Giving freed heap back to the kernel after a burst.
//!
//! A burst of connections (a flood of handshakes that never finish, many
//! tunnels at once) raises the heap; when they end, glibc keeps the freed
//! memory for reuse and returns only what sits at the very top of the
//! heap, so a ztunnel that took a flood stays at its peak resident size.
//! `malloc_trim(0)` hands every free page back (`madvise`), wherever it
//! is. It is called every [`INTERVAL`] on a blocking thread; with one
//! malloc arena (`MALLOC_ARENA_MAX=1`, what our processes are started
//! with) a call with nothing to return costs microseconds. Measured in
//! `e2e/tests/hostile.rs` and `docs/performance.md`.

use std::time::Duration;

/// How often freed heap is returned.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

#[allow(unsafe_code)] // glibc's declaration; the call below has no preconditions.
unsafe extern "C" {
    /// glibc: releases free memory at the top of the heap and, since
    /// glibc 2.8, the free pages inside it; `pad` bytes are kept at the top.
    safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
}

/// Returns freed heap to the kernel; true when some was.
pub(crate) fn trim() -> bool {
    malloc_trim(0) != 0
}

/// Trims every [`INTERVAL`] until the runtime stops.
pub(crate) async fn run() {
    loop {
        tokio::time::sleep(INTERVAL).await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_heap_is_returned() {
        // Many small blocks, most freed: the pages between the survivors
        // are free but not at the top, which only a trim returns.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let survivors: Vec<Vec<u8>> = blocks.iter().step_by(100).cloned().collect();
        blocks.clear();
        blocks.shrink_to_fit();
        assert!(super::trim(), "free pages inside the heap were returned");
        assert_eq!(survivors.len(), 200);
    }
}
