//! The targets of the benchmark issue (#8), and whether a run met them.
//! Printed and written with every run so nobody has to work them out,
//! beside what the relay floor (`meshbench-relay`: the same hops with no
//! work done) reached in the same run, where it has a comparable figure.

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
    /// The relay floor's figure for the same metric: none for memory (a
    /// relay holds no state worth comparing) and for new connections with
    /// pooled HBONE (the relay opens every hop anew, so its figure is no
    /// floor there).
    pub(crate) floor: Option<f64>,
}

/// The verdicts on `m`, each with the floor's figure from `floor` where it
/// compares.
pub(crate) fn judge(m: &Measured, floor: Option<&Measured>) -> Vec<Verdict> {
    let at_least = |metric, target, value: f64, bound: f64| Verdict {
        metric,
        target,
        value,
        met: value >= bound,
        floor: None,
    };
    let at_most = |metric, target, value: f64, bound: f64| Verdict {
        metric,
        target,
        value,
        met: value <= bound,
        floor: None,
    };
    let mut verdicts = vec![
        at_least("throughput across nodes / direct", "≥ 0.45", m.throughput_ratio, 0.45),
        at_most("RR p50 − direct p50 (µs)", "≤ 60", m.rr_p50_over_direct_us, 60.0),
        at_most("RR p99 (µs)", "≤ 250", m.rr_p99_us, 250.0),
        at_most("RR new connection p50 (µs)", "≤ 500", m.rr_new_connection_p50_us, 500.0),
        at_most("new HBONE connection p50 (µs)", "≤ 600", m.new_hbone_connection_p50_us, 600.0),
        at_most("ztunnel CPU-s per GiB (worse side)", "≤ 0.7", m.cpu_seconds_per_gib, 0.7),
        at_most("ztunnel RSS idle MiB (larger)", "≤ 8", m.rss_idle_mib, 8.0),
        at_most("ztunnel RSS peak MiB (larger)", "≤ 20", m.rss_peak_mib, 20.0),
    ];
    if let Some(f) = floor {
        let floors = [
            Some(f.throughput_ratio),
            Some(f.rr_p50_over_direct_us),
            Some(f.rr_p99_us),
            None,
            Some(f.new_hbone_connection_p50_us),
            Some(f.cpu_seconds_per_gib),
            None,
            None,
        ];
        for (verdict, floor) in verdicts.iter_mut().zip(floors) {
            verdict.floor = floor;
        }
    }
    verdicts
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
        assert!(judge(&good, None).iter().all(|v| v.met), "bounds are inclusive");
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
        let verdicts = judge(&bad, None);
        assert_eq!(verdicts.len(), 8);
        assert!(verdicts.iter().all(|v| !v.met), "{verdicts:?}");
        assert!(verdicts.iter().all(|v| v.floor.is_none()), "no floor measured");
    }

    #[test]
    fn floors_sit_beside_the_metrics_they_compare_with() {
        let mesh = Measured { throughput_ratio: 0.3, ..Measured::default() };
        let floor = Measured {
            throughput_ratio: 0.5,
            rr_p50_over_direct_us: 40.0,
            rr_p99_us: 150.0,
            rr_new_connection_p50_us: 450.0,
            new_hbone_connection_p50_us: 450.0,
            cpu_seconds_per_gib: 1.1,
            rss_idle_mib: 3.0,
            rss_peak_mib: 5.0,
        };
        let verdicts = judge(&mesh, Some(&floor));
        let by_metric = |prefix: &str| {
            verdicts.iter().find(|v| v.metric.starts_with(prefix)).and_then(|v| v.floor)
        };
        assert_eq!(by_metric("throughput"), Some(0.5));
        assert_eq!(by_metric("RR p50"), Some(40.0));
        assert_eq!(by_metric("RR p99"), Some(150.0));
        assert_eq!(by_metric("RR new"), None, "the relay does not pool: no floor");
        assert_eq!(by_metric("new HBONE"), Some(450.0));
        assert_eq!(by_metric("ztunnel CPU"), Some(1.1));
        assert_eq!(by_metric("ztunnel RSS idle"), None);
        assert_eq!(by_metric("ztunnel RSS peak"), None);
        assert!(!verdicts[0].met, "the verdict is on the mesh's figure, not the floor's");
    }
}
