//! End-to-end tests live in `tests/`. The library holds what `meshbench`
//! and the tests share: the relay floor (`floor`), so a test checks that
//! what the benchmark calls a floor carries bytes intact.

pub mod floor;
