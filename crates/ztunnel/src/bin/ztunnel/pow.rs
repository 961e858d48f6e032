//! `pow` for the whole process, so the loader does not map libm.
//!
//! The one libm function ztunnel calls is `pow`: tokio's multi-thread
//! scheduler raises a smoothing factor to the number of polls in each batch
//! for its moving average of poll times. Loading libm for it cost 0.5 MiB
//! of every ztunnel's resident memory (the loader maps the library and runs
//! the resolvers of its CPU-specific variants at start-up, touching pages
//! all over it: `docs/performance.md`). Defined here, from the `libm` crate
//! (the Rust port of musl's maths library, kept by the Rust project), the
//! call resolves inside the executable and the linker, which only records
//! libraries that something needs (`--as-needed`), leaves libm out.
//! `tests/binary.rs` checks that a running ztunnel maps no libm.

/// C's `pow(x, y)`, for every caller in the process.
#[allow(unsafe_code)] // `no_mangle` exports a name; the function itself is safe.
#[unsafe(no_mangle)]
extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn powers_as_c_computes_them() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(9.0, 0.5), 3.0);
        assert_eq!(super::pow(5.0, 0.0), 1.0);
        // The scheduler's use: (1 - alpha)^polls.
        let smoothing = super::pow(0.9, 3.0);
        assert!((smoothing - 0.729).abs() < 1e-15, "{smoothing}");
        assert!(super::pow(-1.0, 0.5).is_nan());
        // What std's `powf` becomes, now answered by the function above.
        assert_eq!(std::hint::black_box(2.0f64).powf(std::hint::black_box(3.0)), 8.0);
    }
}
