//! Installing, reading back and removing the rules in a pod's namespace.
//! Idempotent: installing twice leaves one copy; removing what is not
//! there succeeds.

use std::fs::File;

use crate::netns_exec::{ExecError, run_in};
use crate::rules::{
    Backend, MANGLE_OUTPUT_CHAIN, MANGLE_PREROUTING_CHAIN, NFT_TABLE, OUTPUT_CHAIN,
    PREROUTING_CHAIN, ROUTE_TABLE, RuleSettings, iptables_jumps, iptables_mangle_jumps,
    iptables_restore, nft_script, route_commands, route_rule_present,
};

/// Our chains in each iptables table, with the built-in chain each is
/// jumped to from.
const IPTABLES_CHAINS: [(&str, [(&str, &str); 2]); 2] = [
    ("nat", [("PREROUTING", PREROUTING_CHAIN), ("OUTPUT", OUTPUT_CHAIN)]),
    ("mangle", [("PREROUTING", MANGLE_PREROUTING_CHAIN), ("OUTPUT", MANGLE_OUTPUT_CHAIN)]),
];

/// `iptables-save` of the tables we write to.
fn iptables_save(netns: &File) -> Result<String, ExecError> {
    let mut out = String::new();
    for (table, _) in IPTABLES_CHAINS {
        out += &run_in(netns, "iptables-save", &["-t", table], "")?;
    }
    Ok(out)
}

/// The policy rules of each family in use here, as `ip rule show` prints
/// them: `(v6, rules)`. IPv6 may be disabled in the pod's namespace; then
/// it has nothing to route and is left out.
fn rules_by_family(netns: &File) -> Result<Vec<(bool, String)>, ExecError> {
    let mut out = vec![(false, run_in(netns, "ip", &["-4", "rule", "show"], "")?)];
    if let Ok(v6) = run_in(netns, "ip", &["-6", "rule", "show"], "") {
        out.push((true, v6));
    }
    Ok(out)
}

/// The policy rule and local route that bring replies of source-preserved
/// connections back to ztunnel.
fn install_routes(netns: &File) -> Result<(), ExecError> {
    for (v6, rules) in rules_by_family(netns)? {
        let [rule, route] = route_commands(v6);
        if !route_rule_present(&rules) {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            run_in(netns, "ip", &args, "")?;
        }
        let args: Vec<&str> = route.iter().map(String::as_str).collect();
        run_in(netns, "ip", &args, "")?;
    }
    Ok(())
}

fn remove_routes(netns: &File) -> Result<(), ExecError> {
    let table = ROUTE_TABLE.to_string();
    for (v6, _) in rules_by_family(netns)? {
        let family = if v6 { "-6" } else { "-4" };
        let [rule, _] = route_commands(v6);
        // However many copies a crash left behind (each `del` removes one;
        // bounded, should a rule somehow survive its deletion).
        for _ in 0..64 {
            if !route_rule_present(&run_in(netns, "ip", &[family, "rule", "show"], "")?) {
                break;
            }
            let mut args: Vec<&str> = rule.iter().map(String::as_str).collect();
            args[2] = "del";
            run_in(netns, "ip", &args, "")?;
        }
        // A table never filled does not exist; nothing to flush then.
        if !routes_of_table(netns, family)?.is_empty() {
            run_in(netns, "ip", &[family, "route", "flush", "table", &table], "")?;
        }
    }
    Ok(())
}

/// `ip route show table 100`; empty when the table does not exist.
fn routes_of_table(netns: &File, family: &str) -> Result<String, ExecError> {
    let table = ROUTE_TABLE.to_string();
    match run_in(netns, "ip", &[family, "route", "show", "table", &table], "") {
        Err(ExecError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
            Ok(String::new())
        }
        other => other,
    }
}

/// The routing half of our rules as installed: the policy rule and the
/// routes of our table.
fn installed_routes(netns: &File) -> Result<Vec<String>, ExecError> {
    let table = ROUTE_TABLE.to_string();
    let mut out = Vec::new();
    for (v6, rules) in rules_by_family(netns)? {
        let family = if v6 { "-6" } else { "-4" };
        out.extend(
            rules.lines().filter(|l| route_rule_present(l)).map(|l| format!("ip {family} {l}")),
        );
        let routes = routes_of_table(netns, family)?;
        out.extend(routes.lines().map(|l| format!("ip {family} table {table}: {l}")));
    }
    Ok(out)
}

/// Installs (or re-installs) the rules.
pub fn install(netns: &File, backend: Backend, settings: &RuleSettings) -> Result<(), ExecError> {
    match backend {
        Backend::Iptables => {
            let current = iptables_save(netns)?;
            let has_jumps = iptables_jumps()
                .iter()
                .chain(&iptables_mangle_jumps())
                .all(|j| current.lines().any(|l| l == j));
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
    install_routes(netns)
}

/// Removes every rule of ours; nothing else is touched.
pub fn remove(netns: &File, backend: Backend) -> Result<(), ExecError> {
    match backend {
        Backend::Iptables => {
            let mut script = String::new();
            for (table, chains) in IPTABLES_CHAINS {
                let current = run_in(netns, "iptables-save", &["-t", table], "")?;
                script += &format!("*{table}\n");
                for line in current.lines() {
                    // Jumps into our chains, however many a crash left behind.
                    if chains.iter().any(|(builtin, ours)| {
                        line.starts_with(&format!("-A {builtin} "))
                            && line.ends_with(&format!("-j {ours}"))
                    }) {
                        script += &line.replacen("-A ", "-D ", 1);
                        script.push('\n');
                    }
                }
                for (_, chain) in chains {
                    if current.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
                        script += &format!("-F {chain}\n-X {chain}\n");
                    }
                }
                script += "COMMIT\n";
            }
            run_in(netns, "iptables-restore", &["--noflush"], &script)?;
        }
        Backend::Nftables => {
            let tables = run_in(netns, "nft", &["list", "tables"], "")?;
            if tables.lines().any(|l| l.trim() == format!("table inet {NFT_TABLE}")) {
                run_in(netns, "nft", &["delete", "table", "inet", NFT_TABLE], "")?;
            }
        }
    }
    remove_routes(netns)
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
            let current = iptables_save(netns)?;
            let ours = |l: &str| {
                IPTABLES_CHAINS.iter().flat_map(|(_, c)| c).any(|(_, chain)| l.contains(chain))
            };
            let mut rules: Vec<String> = current
                .lines()
                .filter(|l| l.starts_with("-A") && ours(l))
                .map(str::to_string)
                .collect();
            rules.extend(installed_routes(netns)?);
            Ok(rules)
        }
        Backend::Nftables => {
            let tables = run_in(netns, "nft", &["list", "tables"], "")?;
            let mut rules = Vec::new();
            if tables.lines().any(|l| l.trim() == format!("table inet {NFT_TABLE}")) {
                let table = run_in(netns, "nft", &["list", "table", "inet", NFT_TABLE], "")?;
                rules.extend(table.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
            }
            rules.extend(installed_routes(netns)?);
            Ok(rules)
        }
    }
}
