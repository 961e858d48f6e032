//! The targets of the benchmark issue (#8), and whether a run met them.
//! Printed and written with every run so nobody has to work them out.

/// The figures the targets are about, from one run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Measured {
    /// Mesh across nodes / direct, single stream.
    pub(crate) throughput_ratio: f64,
    /// Mesh across nodes p50 − direct p50, persistent connection (µs).
    pub(crate) rr_p50_over_direct_us: f64,
    /// Mesh across nodes p99, persistent connection (µs).
    pub(crate) rr_p99_us: f64,
    /// Mesh across nodes p50, a new TCP connection per request (µs).
    pub(crate) rr_new_connection_p50_us: f64,
    /// A brand-new HBONE connection to first byte, p50 (µs).
    pub(crate) new_hbone_connection_p50_us: f64,
    /// The worse ztunnel's CPU seconds per GiB carried.
    pub(crate) cpu_seconds_per_gib: f64,
    /// The larger ztunnel's idle and peak RSS (MiB).
    pub(crate) rss_idle_mib: f64,
    pub(crate) rss_peak_mib: f64,
}

/// One target: what, the bound, this run's figure, met or not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) metric: &'static str,
    pub(crate) target: &'static str,
    pub(crate) value: f64,
    pub(crate) met: bool,
}

pub(crate) fn judge(m: &Measured) -> Vec<Verdict> {
    let at_least = |metric, target, value: f64, bound: f64| Verdict {
        metric,
        target,
        value,
        met: value >= bound,
    };
    let at_most = |metric, target, value: f64, bound: f64| Verdict {
        metric,
        target,
        value,
        met: value <= bound,
    };
    vec![
        at_least("throughput across nodes / direct", "≥ 0.45", m.throughput_ratio, 0.45),
        at_most("RR p50 − direct p50 (µs)", "≤ 60", m.rr_p50_over_direct_us, 60.0),
        at_most("RR p99 (µs)", "≤ 250", m.rr_p99_us, 250.0),
        at_most("RR new connection p50 (µs)", "≤ 500", m.rr_new_connection_p50_us, 500.0),
        at_most("new HBONE connection p50 (µs)", "≤ 600", m.new_hbone_connection_p50_us, 600.0),
        at_most("ztunnel CPU-s per GiB (worse side)", "≤ 0.7", m.cpu_seconds_per_gib, 0.7),
        at_most("ztunnel RSS idle MiB (larger)", "≤ 8", m.rss_idle_mib, 8.0),
        at_most("ztunnel RSS peak MiB (larger)", "≤ 20", m.rss_peak_mib, 20.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_is_judged_on_its_own_side_of_the_bound() {
        let good = Measured {
            throughput_ratio: 0.45,
            rr_p50_over_direct_us: 60.0,
            rr_p99_us: 250.0,
            rr_new_connection_p50_us: 500.0,
            new_hbone_connection_p50_us: 600.0,
            cpu_seconds_per_gib: 0.7,
            rss_idle_mib: 8.0,
            rss_peak_mib: 20.0,
        };
        assert!(judge(&good).iter().all(|v| v.met), "bounds are inclusive");
        let bad = Measured {
            throughput_ratio: 0.44,
            rr_p50_over_direct_us: 61.0,
            rr_p99_us: 251.0,
            rr_new_connection_p50_us: 501.0,
            new_hbone_connection_p50_us: 601.0,
            cpu_seconds_per_gib: 0.71,
            rss_idle_mib: 8.1,
            rss_peak_mib: 20.1,
        };
        let verdicts = judge(&bad);
        assert_eq!(verdicts.len(), 8);
        assert!(verdicts.iter().all(|v| !v.met), "{verdicts:?}");
    }
}
