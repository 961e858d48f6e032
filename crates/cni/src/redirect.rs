//! Installing, reading back and removing the rules in a pod's namespace.
//! Idempotent: installing twice leaves one copy; removing what is not
//! there succeeds.

use std::fs::File;

use crate::netns_exec::{ExecError, run_in};
use crate::rules::{
    Backend, NFT_TABLE, OUTPUT_CHAIN, PREROUTING_CHAIN, RuleSettings, iptables_jumps,
    iptables_restore, nft_script,
};

/// Installs (or re-installs) the rules.
pub fn install(netns: &File, backend: Backend, settings: &RuleSettings) -> Result<(), ExecError> {
    match backend {
        Backend::Iptables => {
            let current = run_in(netns, "iptables-save", &["-t", "nat"], "")?;
            let has_jumps = iptables_jumps().iter().all(|j| current.lines().any(|l| l == j));
            if has_jumps {
                // Chains present and jumps in place: rewrite only our chains.
                run_in(
                    netns,
                    "iptables-restore",
                    &["--noflush"],
                    &iptables_restore(settings, false),
                )?;
            } else {
                // Remove half-installed leftovers first so jumps are not doubled.
                remove(netns, backend)?;
                run_in(
                    netns,
                    "iptables-restore",
                    &["--noflush"],
                    &iptables_restore(settings, true),
                )?;
            }
        }
        Backend::Nftables => {
            run_in(netns, "nft", &["-f", "-"], &nft_script(settings))?;
        }
    }
    Ok(())
}

/// Removes every rule of ours; nothing else is touched.
pub fn remove(netns: &File, backend: Backend) -> Result<(), ExecError> {
    match backend {
        Backend::Iptables => {
            let current = run_in(netns, "iptables-save", &["-t", "nat"], "")?;
            let mut script = String::from("*nat\n");
            for line in current.lines() {
                // Jumps into our chains, however many a crash left behind.
                if line.starts_with("-A PREROUTING")
                    && line.ends_with(&format!("-j {PREROUTING_CHAIN}"))
                    || line.starts_with("-A OUTPUT")
                        && line.ends_with(&format!("-j {OUTPUT_CHAIN}"))
                {
                    script += &line.replacen("-A ", "-D ", 1);
                    script.push('\n');
                }
            }
            for chain in [PREROUTING_CHAIN, OUTPUT_CHAIN] {
                if current.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
                    script += &format!("-F {chain}\n-X {chain}\n");
                }
            }
            script += "COMMIT\n";
            run_in(netns, "iptables-restore", &["--noflush"], &script)?;
        }
        Backend::Nftables => {
            let tables = run_in(netns, "nft", &["list", "tables"], "")?;
            if tables.lines().any(|l| l.trim() == format!("table inet {NFT_TABLE}")) {
                run_in(netns, "nft", &["delete", "table", "inet", NFT_TABLE], "")?;
            }
        }
    }
    Ok(())
}

/// Compares our rules in `netns` with `expected` (what [`installed`] read
/// right after installing them) and, when they differ, installs them again:
/// `Some(rules now installed)` after a repair, `None` when nothing drifted.
pub fn repair_if_drifted(
    netns: &File,
    backend: Backend,
    settings: &RuleSettings,
    expected: &[String],
) -> Result<Option<Vec<String>>, ExecError> {
    if installed(netns, backend)? == expected {
        return Ok(None);
    }
    install(netns, backend, settings)?;
    installed(netns, backend).map(Some)
}

/// Our rules as installed, read back (for tests and the admin endpoint):
/// `iptables-save` lines of our chains and jumps, or our nft table.
pub fn installed(netns: &File, backend: Backend) -> Result<Vec<String>, ExecError> {
    match backend {
        Backend::Iptables => {
            let current = run_in(netns, "iptables-save", &["-t", "nat"], "")?;
            Ok(current
                .lines()
                .filter(|l| l.contains(PREROUTING_CHAIN) || l.contains(OUTPUT_CHAIN))
                .filter(|l| l.starts_with("-A"))
                .map(str::to_string)
                .collect())
        }
        Backend::Nftables => {
            let tables = run_in(netns, "nft", &["list", "tables"], "")?;
            if !tables.lines().any(|l| l.trim() == format!("table inet {NFT_TABLE}")) {
                return Ok(Vec::new());
            }
            let table = run_in(netns, "nft", &["list", "table", "inet", NFT_TABLE], "")?;
            Ok(table.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
        }
    }
}
