//! Environment variables the mesh's own processes are started with, beside
//! `RUST_LOG`. The Helm chart and images must set the same.

use std::path::Path;

/// glibc gives every thread that allocates its own malloc arena; ztunnel's
/// read buffers are allocated on one worker and often freed on the other,
/// so two arenas each keep their own high-water mark. One arena measured
/// 21.4–22.0 → 18.9–19.1 MiB peak RSS for the client ztunnel under 64
/// streams, with no throughput change (docs/performance.md). Small
/// allocations stay lock-free in glibc's per-thread cache either way.
const ZTUNNEL: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "1")];

/// The variables for `program` (a path or a bare name).
pub(crate) fn environment_for(program: &str) -> &'static [(&'static str, &'static str)] {
    match Path::new(program).file_name().and_then(|n| n.to_str()) {
        Some("ztunnel") => ZTUNNEL,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ztunnel_gets_one_malloc_arena() {
        assert_eq!(environment_for("/var/tmp/target/release/ztunnel"), ZTUNNEL);
        assert_eq!(environment_for("ztunnel"), ZTUNNEL);
        assert!(environment_for("/bin/mesh-sample").is_empty());
        assert!(environment_for("/opt/ztunnel-tools/iperf3").is_empty());
    }
}
