//! What the benchmarks measure with: latency percentiles, medians of
//! repeated rounds, and a process's memory and CPU time from `/proc`.

use std::time::Duration;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `samples`; zeros for none.
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99) }
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// A process's resident memory now and at its peak (KiB), the anonymous
/// (private heap and stacks) part of it, and CPU seconds in user space and
/// in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// Resident now.
    pub rss_kib: u64,
    /// Anonymous (heap, stacks) resident.
    pub anon_kib: u64,
    /// Peak resident (`VmHWM`).
    pub peak_kib: u64,
    /// CPU seconds in user space.
    pub user_seconds: f64,
    /// CPU seconds in the kernel.
    pub kernel_seconds: f64,
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so the next
/// reading is the peak of what follows (root; `proc(5)`, `clear_refs`).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A process's figures now (zeros when it is gone).
pub fn process_stats(pid: u32) -> ProcessStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat: indexes 11 and 12 after ')'.
    let per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    ProcessStats {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        peak_kib: field("VmHWM:"),
        user_seconds: ticks(11) as f64 / per_second,
        kernel_seconds: ticks(12) as f64 / per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_no_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
