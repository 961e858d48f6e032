//! The rules as installed in a real network namespace, read back; both
//! back ends; installing twice leaves one copy; removal leaves nothing.
//! Needs root (CI runs as root); without it each test says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cni::redirect::{install, installed, remove};
use cni::rules::{Backend, RuleSettings, iptables_jumps, iptables_rules};
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
    let mut got = installed(&ns.file(), Backend::Iptables).unwrap();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "what iptables-save prints is what we meant");

    // Again, and after an "agent restart" with changed settings: one copy.
    install(&ns.file(), Backend::Iptables, &settings).unwrap();
    let no_dns = RuleSettings { capture_dns: false, ..settings.clone() };
    install(&ns.file(), Backend::Iptables, &no_dns).unwrap();
    let got = installed(&ns.file(), Backend::Iptables).unwrap();
    assert_eq!(got.iter().filter(|l| l.starts_with("-A PREROUTING")).count(), 1, "{got:#?}");
    assert_eq!(got.iter().filter(|l| l.starts_with("-A OUTPUT")).count(), 1);
    assert!(!got.iter().any(|l| l.contains("--dport 53")), "settings changes apply: {got:#?}");

    remove(&ns.file(), Backend::Iptables).unwrap();
    assert!(installed(&ns.file(), Backend::Iptables).unwrap().is_empty());
    remove(&ns.file(), Backend::Iptables).unwrap();
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
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    assert_eq!(text.matches("redirect to :15001").count(), 1, "one copy after two installs");
    remove(&ns.file(), Backend::Nftables).unwrap();
    assert!(installed(&ns.file(), Backend::Nftables).unwrap().is_empty());
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
