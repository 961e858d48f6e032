//! Table tests for L4 policy evaluation.

use std::net::IpAddr;

use super::*;
use crate::Identity;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    let (a, p) = s.split_once('/').unwrap();
    IpNet::new(ip(a), p.parse().unwrap()).unwrap()
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: "ns1".into(),
        scope: PolicyScope::Namespace,
        action,
        rules,
        dry_run: false,
    }
}

/// A rule of one clause of one match.
fn rule(m: Match) -> Rule {
    Rule { clauses: vec![Clause { matches: vec![m] }] }
}

fn allow(m: Match) -> Authorization {
    policy("allow", Action::Allow, vec![rule(m)])
}

fn deny(m: Match) -> Authorization {
    policy("deny", Action::Deny, vec![rule(m)])
}

/// From spiffe://cluster.local/ns/foo/sa/bar at 10.0.0.5 to 10.0.1.9:8080.
fn conn() -> Connection {
    Connection {
        source_identity: Some("spiffe://cluster.local/ns/foo/sa/bar".parse().unwrap()),
        source_ip: ip("10.0.0.5"),
        destination_ip: ip("10.0.1.9"),
        destination_port: 8080,
    }
}

fn plaintext() -> Connection {
    Connection { source_identity: None, ..conn() }
}

fn from(identity: &str) -> Connection {
    Connection { source_identity: Some(identity.parse::<Identity>().unwrap()), ..conn() }
}

#[test]
fn table() {
    let m = Match::default;
    let cases: Vec<(&str, Vec<Authorization>, Connection, bool)> = vec![
        ("no policies allow", vec![], conn(), true),
        // principals
        (
            "principal exact",
            vec![allow(Match { principals: vec![exact("cluster.local/ns/foo/sa/bar")], ..m() })],
            conn(),
            true,
        ),
        (
            "principal exact, other caller",
            vec![allow(Match { principals: vec![exact("cluster.local/ns/foo/sa/bar")], ..m() })],
            from("spiffe://cluster.local/ns/foo/sa/other"),
            false,
        ),
        (
            "principal prefix",
            vec![allow(Match {
                principals: vec![StringMatch::Prefix("cluster.local/ns/foo/".into())],
                ..m()
            })],
            conn(),
            true,
        ),
        (
            "principal suffix",
            vec![allow(Match { principals: vec![StringMatch::Suffix("/sa/bar".into())], ..m() })],
            conn(),
            true,
        ),
        (
            "principal presence needs an identity",
            vec![allow(Match { principals: vec![StringMatch::Presence], ..m() })],
            plaintext(),
            false,
        ),
        (
            "principal presence with identity",
            vec![allow(Match { principals: vec![StringMatch::Presence], ..m() })],
            conn(),
            true,
        ),
        (
            "principals are OR-ed",
            vec![allow(Match {
                principals: vec![exact("x/ns/y/sa/z"), exact("cluster.local/ns/foo/sa/bar")],
                ..m()
            })],
            conn(),
            true,
        ),
        (
            "not_principals excludes",
            vec![allow(Match {
                not_principals: vec![exact("cluster.local/ns/foo/sa/bar")],
                ..m()
            })],
            conn(),
            false,
        ),
        (
            "not_principals lets others in",
            vec![allow(Match {
                not_principals: vec![exact("cluster.local/ns/foo/sa/bar")],
                ..m()
            })],
            from("spiffe://cluster.local/ns/foo/sa/other"),
            true,
        ),
        (
            "not_principals lets plaintext in",
            vec![allow(Match { not_principals: vec![StringMatch::Presence], ..m() })],
            plaintext(),
            true,
        ),
        // namespaces
        ("namespace", vec![allow(Match { namespaces: vec![exact("foo")], ..m() })], conn(), true),
        (
            "other namespace",
            vec![allow(Match { namespaces: vec![exact("baz")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_namespaces excludes",
            vec![allow(Match { not_namespaces: vec![exact("foo")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_namespaces others",
            vec![allow(Match { not_namespaces: vec![exact("baz")], ..m() })],
            conn(),
            true,
        ),
        (
            "namespace needs identity",
            vec![allow(Match { namespaces: vec![exact("foo")], ..m() })],
            plaintext(),
            false,
        ),
        // source IPs
        (
            "source block",
            vec![allow(Match { source_ips: vec![net("10.0.0.0/24")], ..m() })],
            conn(),
            true,
        ),
        (
            "source outside block",
            vec![allow(Match { source_ips: vec![net("10.0.9.0/24")], ..m() })],
            conn(),
            false,
        ),
        (
            "source /32",
            vec![allow(Match { source_ips: vec![net("10.0.0.5/32")], ..m() })],
            conn(),
            true,
        ),
        (
            "source /0",
            vec![allow(Match { source_ips: vec![net("0.0.0.0/0")], ..m() })],
            conn(),
            true,
        ),
        (
            "source block other family",
            vec![allow(Match { source_ips: vec![net("::/0")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_source_ips excludes",
            vec![allow(Match { not_source_ips: vec![net("10.0.0.0/8")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_source_ips others",
            vec![allow(Match { not_source_ips: vec![net("192.168.0.0/16")], ..m() })],
            conn(),
            true,
        ),
        // destination IPs
        (
            "destination block",
            vec![allow(Match { destination_ips: vec![net("10.0.1.0/24")], ..m() })],
            conn(),
            true,
        ),
        (
            "destination outside",
            vec![allow(Match { destination_ips: vec![net("10.0.2.0/24")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_destination_ips excludes",
            vec![allow(Match { not_destination_ips: vec![net("10.0.1.9/32")], ..m() })],
            conn(),
            false,
        ),
        (
            "not_destination_ips others",
            vec![allow(Match { not_destination_ips: vec![net("10.0.2.0/24")], ..m() })],
            conn(),
            true,
        ),
        // ports
        ("port", vec![allow(Match { destination_ports: vec![80, 8080], ..m() })], conn(), true),
        ("other port", vec![allow(Match { destination_ports: vec![80], ..m() })], conn(), false),
        (
            "not_destination_ports excludes",
            vec![allow(Match { not_destination_ports: vec![8080], ..m() })],
            conn(),
            false,
        ),
        (
            "not_destination_ports others",
            vec![allow(Match { not_destination_ports: vec![9090], ..m() })],
            conn(),
            true,
        ),
        // fields are AND-ed
        (
            "all fields must hold",
            vec![allow(Match {
                namespaces: vec![exact("foo")],
                destination_ports: vec![80],
                ..m()
            })],
            conn(),
            false,
        ),
        (
            "all fields hold",
            vec![allow(Match {
                namespaces: vec![exact("foo")],
                destination_ports: vec![8080],
                source_ips: vec![net("10.0.0.0/16")],
                ..m()
            })],
            conn(),
            true,
        ),
        // DENY and ALLOW together
        (
            "deny wins over allow",
            vec![
                allow(Match { namespaces: vec![exact("foo")], ..m() }),
                deny(Match { destination_ports: vec![8080], ..m() }),
            ],
            conn(),
            false,
        ),
        (
            "unmatched deny allows",
            vec![deny(Match { destination_ports: vec![22], ..m() })],
            conn(),
            true,
        ),
        (
            "unmatched deny, unmatched allow",
            vec![
                deny(Match { destination_ports: vec![22], ..m() }),
                allow(Match { destination_ports: vec![22], ..m() }),
            ],
            conn(),
            false,
        ),
        // shapes
        (
            "allow-nothing policy (no rules)",
            vec![policy("nothing", Action::Allow, vec![])],
            conn(),
            false,
        ),
        (
            "deny with no rules never matches",
            vec![policy("none", Action::Deny, vec![])],
            conn(),
            true,
        ),
        (
            "allow with an empty rule allows all",
            vec![policy("all", Action::Allow, vec![Rule::default()])],
            plaintext(),
            true,
        ),
        ("empty match matches nothing", vec![allow(Match::default())], conn(), false),
        (
            "empty clause constrains nothing",
            vec![policy("c", Action::Allow, vec![Rule { clauses: vec![Clause::default()] }])],
            conn(),
            true,
        ),
        (
            "clauses are AND-ed",
            vec![policy(
                "and",
                Action::Allow,
                vec![Rule {
                    clauses: vec![
                        Clause { matches: vec![Match { namespaces: vec![exact("foo")], ..m() }] },
                        Clause { matches: vec![Match { destination_ports: vec![80], ..m() }] },
                    ],
                }],
            )],
            conn(),
            false,
        ),
        (
            "matches in a clause are OR-ed",
            vec![policy(
                "or",
                Action::Allow,
                vec![Rule {
                    clauses: vec![Clause {
                        matches: vec![
                            Match { destination_ports: vec![80], ..m() },
                            Match { namespaces: vec![exact("foo")], ..m() },
                        ],
                    }],
                }],
            )],
            conn(),
            true,
        ),
        (
            "ipv6",
            vec![allow(Match { source_ips: vec![net("fd00::/64")], ..m() })],
            Connection { source_ip: ip("fd00::7"), destination_ip: ip("fd00::9"), ..conn() },
            true,
        ),
    ];
    for (name, policies, conn, expected) in cases {
        let decision = evaluate(&policies, &conn);
        assert_eq!(decision.allowed(), expected, "{name}: {decision:?}");
    }
}

#[test]
fn the_deciding_policy_and_rule_are_named() {
    let p = policy(
        "two-rules",
        Action::Deny,
        vec![
            rule(Match { destination_ports: vec![22], ..Match::default() }),
            rule(Match { destination_ports: vec![8080], ..Match::default() }),
        ],
    );
    let d = evaluate([&p], &conn());
    assert_eq!(
        d.reason,
        DecisionReason::DeniedByPolicy(PolicyRef {
            namespace: "ns1".into(),
            name: "two-rules".into(),
            rule: 1
        })
    );
    let a = allow(Match { destination_ports: vec![8080], ..Match::default() });
    assert!(matches!(
        evaluate([&a], &conn()).reason,
        DecisionReason::AllowedByPolicy(PolicyRef { rule: 0, .. })
    ));
    let miss = allow(Match { destination_ports: vec![1], ..Match::default() });
    assert_eq!(evaluate([&miss], &conn()).reason, DecisionReason::NoAllowPolicyMatched);
    assert_eq!(evaluate([], &conn()).reason, DecisionReason::NoPolicies);
}

#[test]
fn dry_run_policies_are_evaluated_but_never_decide() {
    let dry = |mut p: Authorization| {
        p.dry_run = true;
        p
    };
    let port = |p: u16| Match { destination_ports: vec![p], ..Match::default() };
    // A matching dry-run DENY: allowed, and the dry-run verdict names it.
    let d = evaluate([&dry(deny(port(8080)))], &conn());
    assert_eq!(d.reason, DecisionReason::NoPolicies);
    assert!(matches!(&d.dry_run, Some(DecisionReason::DeniedByPolicy(p)) if p.name == "deny"));
    assert!(d.dry_run_change().is_some());
    // A dry-run ALLOW that misses: allowed, but it would deny.
    let d = evaluate([&dry(allow(port(1)))], &conn());
    assert!(d.allowed());
    assert_eq!(d.dry_run_change(), Some(&DecisionReason::NoAllowPolicyMatched));
    // Beside an enforced DENY: still denied; a dry-run ALLOW changes nothing.
    let d = evaluate([&dry(allow(port(8080))), &deny(port(8080))], &conn());
    assert!(!d.allowed());
    assert_eq!(d.dry_run_change(), None);
    // A dry-run DENY that misses: the same verdict, nothing to report.
    let d = evaluate([&dry(deny(port(1)))], &conn());
    assert!(d.allowed() && d.dry_run.is_some() && d.dry_run_change().is_none());
    // No dry-run policies: no dry-run verdict.
    assert_eq!(evaluate([&deny(port(1))], &conn()).dry_run, None);
}

#[test]
fn ip_blocks_ignore_host_bits_and_reject_long_prefixes() {
    assert!(net("10.0.0.77/24").contains(&ip("10.0.0.1")));
    assert!(IpNet::new(ip("10.0.0.0"), 33).is_none());
    assert!(IpNet::new(ip("::"), 129).is_none());
    assert!(IpNet::new(ip("::"), 128).is_some());
}
