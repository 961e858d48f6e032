//! The rules as installed in a real network namespace, read back; both
//! back ends; installing twice leaves one copy; removal leaves nothing.
//! Needs root (CI runs as root); without it each test says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cni::redirect::{install, installed, remove};
use cni::rules::{
    Backend, RuleSettings, iptables_jumps, iptables_mangle_jumps, iptables_mangle_rules,
    iptables_rules,
};
use testkit::netns::{TestNetns, is_root};

fn name(test: &str) -> String {
    format!("cni-{test}")
}

#[test]
fn iptables_rules_read_back_idempotent_and_removed() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let ns = TestNetns::new(&name("ipt"));
    let settings = RuleSettings::default();
    install(&ns.file(), Backend::Iptables, &settings).unwrap();
    let mut expected: Vec<String> = iptables_jumps().to_vec();
    expected.extend(iptables_rules(&settings));
    expected.extend(iptables_mangle_jumps());
    expected.extend(iptables_mangle_rules(&settings));
    let got = installed(&ns.file(), Backend::Iptables).unwrap();
    let (mut routes, mut got): (Vec<String>, Vec<String>) =
        got.into_iter().partition(|l| l.starts_with("ip "));
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "what iptables-save prints is what we meant");
    assert_source_routes(&mut routes);

    // Again, and after an "agent restart" with changed settings: one copy.
    install(&ns.file(), Backend::Iptables, &settings).unwrap();
    let no_dns = RuleSettings { capture_dns: false, ..settings.clone() };
    install(&ns.file(), Backend::Iptables, &no_dns).unwrap();
    let got = installed(&ns.file(), Backend::Iptables).unwrap();
    assert_eq!(got.iter().filter(|l| l.starts_with("-A PREROUTING")).count(), 2, "{got:#?}");
    assert_eq!(got.iter().filter(|l| l.starts_with("-A OUTPUT")).count(), 2);
    let mut routes: Vec<String> = got.iter().filter(|l| l.starts_with("ip ")).cloned().collect();
    assert_source_routes(&mut routes);
    assert!(!got.iter().any(|l| l.contains("--dport 53")), "settings changes apply: {got:#?}");

    remove(&ns.file(), Backend::Iptables).unwrap();
    assert_eq!(installed(&ns.file(), Backend::Iptables).unwrap(), Vec::<String>::new());
    remove(&ns.file(), Backend::Iptables).unwrap();
}

/// Istio's source-preservation routing, once per family: the policy rule
/// and the local route of table 100.
fn assert_source_routes(routes: &mut [String]) {
    routes.sort();
    let text = routes.join("\n");
    assert_eq!(
        routes.iter().filter(|l| l.contains("fwmark 0x111/0xfff lookup 100")).count(),
        2,
        "{text}"
    );
    assert!(routes.iter().any(|l| l.starts_with("ip -4 ") && l.contains("32764:")), "{text}");
    assert!(
        routes.iter().any(|l| l.starts_with("ip -4 table 100: local default dev lo")),
        "{text}"
    );
    assert!(
        routes.iter().any(|l| l.starts_with("ip -6 table 100: local default dev lo")),
        "{text}"
    );
}

#[test]
fn nftables_rules_read_back_idempotent_and_removed() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let ns = TestNetns::new(&name("nft"));
    let settings = RuleSettings::default();
    install(&ns.file(), Backend::Nftables, &settings).unwrap();
    install(&ns.file(), Backend::Nftables, &settings).unwrap();
    let got = installed(&ns.file(), Backend::Nftables).unwrap();
    let text = got.join("\n");
    assert_eq!(got.iter().filter(|l| l.starts_with("table inet mesh_inpod")).count(), 1, "{text}");
    for expected in [
        "tcp dport 15008 accept",
        "redirect to :15006",
        "udp dport 53 redirect to :15053",
        "redirect to :15001",
        "ip saddr 169.254.7.127",
        // nft prints the mask its own way (0xfffff111 for ours); the mark
        // set is what matters.
        "ct mark set ct mark & 0x",
        "| 0x00000111",
        "meta mark set ct mark",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    assert_eq!(text.matches("redirect to :15001").count(), 1, "one copy after two installs");
    let mut routes: Vec<String> = got.into_iter().filter(|l| l.starts_with("ip ")).collect();
    assert_source_routes(&mut routes);
    remove(&ns.file(), Backend::Nftables).unwrap();
    assert_eq!(installed(&ns.file(), Backend::Nftables).unwrap(), Vec::<String>::new());
    remove(&ns.file(), Backend::Nftables).unwrap();
}

#[test]
fn a_missing_tool_or_namespace_is_a_named_error() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let ns = TestNetns::new(&name("err"));
    let err = cni::netns_exec::run_in(&ns.file(), "/nonexistent/iptables", &[], "").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/iptables"), "{err}");
    let err =
        cni::netns_exec::run_in(&ns.file(), "iptables-restore", &[], "garbage\n").unwrap_err();
    assert!(err.to_string().contains("iptables-restore"), "{err}");
}
