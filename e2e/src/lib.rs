//! End-to-end tests live in `tests/`. The library holds what `meshbench`
//! and the tests share: the relay floor (`floor`), so a test checks that
//! what the benchmark calls a floor carries bytes intact; pods outside the
//! mesh (`pods`); a timed first byte through a path (`probe`); latency percentiles and
//! process figures (`stats`), for `meshbench` and `waybench`.

pub mod floor;
pub mod pods;
pub mod probe;
pub mod stats;
