//! Links the ztunnel binary with packed relative relocations (DT_RELR).
//!
//! A position-independent executable carries one 24-byte relocation
//! record per pointer in its read-only data (vtables, string tables) for
//! the loader to apply at start-up: ~9,000 records, 219 KB, all read once
//! and then resident for the life of the process. Packed, the same
//! relocations take a few KB. Needs binutils ≥ 2.38 to link and glibc ≥
//! 2.36 to run (an older loader refuses the binary, naming the missing
//! `GLIBC_ABI_DT_RELR` version).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
