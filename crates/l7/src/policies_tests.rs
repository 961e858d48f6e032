#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::authz::Segment;

fn policy(name: &str, action: proto::AuthorizationAction) -> proto::Authorization {
    proto::Authorization {
        namespace: "apps".into(),
        name: name.into(),
        action: action as i32,
        ..Default::default()
    }
}

fn rule_with(
    from: Vec<proto::AuthorizationSource>,
    to: Vec<proto::AuthorizationOperation>,
    when: Vec<proto::AuthorizationCondition>,
) -> proto::AuthorizationRule {
    proto::AuthorizationRule { from, to, when }
}

fn parse(p: &proto::Authorization) -> Result<AttachedPolicy, ConfigError> {
    AttachedPolicy::try_from(p)
}

#[test]
fn a_policy_reads_in_istios_syntax() {
    let mut p = policy("readers", proto::AuthorizationAction::Allow);
    p.services = vec!["apps/web.apps.svc.cluster.local".into()];
    p.rules = vec![rule_with(
        vec![proto::AuthorizationSource {
            principals: vec!["cluster.local/ns/apps/sa/*".into()],
            ip_blocks: vec!["10.0.0.0/8".into()],
            ..Default::default()
        }],
        vec![proto::AuthorizationOperation {
            methods: vec!["get".into()],
            paths: vec!["/api/{*}/items".into(), "/static*".into()],
            ports: vec![8080],
            ..Default::default()
        }],
        vec![proto::AuthorizationCondition {
            key: "request.headers[X-Team]".into(),
            values: vec!["blue".into()],
            not_values: vec![],
        }],
    )];
    let a = parse(&p).unwrap();
    assert_eq!(a.http.name, "apps/readers");
    assert_eq!(a.http.action, Action::Allow);
    let r = &a.http.rules[0];
    assert_eq!(r.from[0].principals, vec![StringMatch::Prefix("cluster.local/ns/apps/sa/".into())]);
    assert_eq!(r.to[0].methods, vec!["GET".to_string()], "methods upper-cased");
    assert_eq!(
        r.to[0].paths[0],
        PathMatch::Template(vec![
            Segment::Literal("api".into()),
            Segment::One,
            Segment::Literal("items".into())
        ])
    );
    assert_eq!(r.when[0].key, ConditionKey::RequestHeader("x-team".into()));
    assert!(a.tcp.rules.is_empty(), "an ALLOW rule naming methods allows no TCP connection");
}

#[test]
fn what_does_not_read_is_an_error_naming_the_field() {
    let bad = |rule: proto::AuthorizationRule| {
        let mut p = policy("p", proto::AuthorizationAction::Deny);
        p.rules = vec![proto::AuthorizationRule::default(), rule];
        parse(&p).unwrap_err().to_string()
    };
    let source = |s: proto::AuthorizationSource| rule_with(vec![s], vec![], vec![]);
    let op = |o: proto::AuthorizationOperation| rule_with(vec![], vec![o], vec![]);
    let cond = |key: &str, values: &[&str]| {
        rule_with(
            vec![],
            vec![],
            vec![proto::AuthorizationCondition {
                key: key.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
                not_values: vec![],
            }],
        )
    };
    let e = bad(source(proto::AuthorizationSource {
        ip_blocks: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
        ..Default::default()
    }));
    assert!(e.starts_with("rules[1].from[0].ip_blocks[1]:"), "{e}");
    let e = bad(op(proto::AuthorizationOperation { ports: vec![70000], ..Default::default() }));
    assert!(e.starts_with("rules[1].to[0].ports:"), "{e}");
    let e = bad(op(proto::AuthorizationOperation {
        paths: vec!["/a/{**}/b".into()],
        ..Default::default()
    }));
    assert!(e.starts_with("rules[1].to[0].paths[0]:"), "{e}");
    let e = bad(cond("request.header[x]", &["a"]));
    assert!(e.starts_with("rules[1].when[0].key:"), "{e}");
    let e = bad(cond("source.ip", &["nope"]));
    assert!(e.starts_with("rules[1].when[0].values:"), "{e}");
    let e = bad(cond("source.ip", &[]));
    assert!(e.contains("needs values"), "{e}");
    let mut p = policy("p", proto::AuthorizationAction::Allow);
    p.action = 9;
    assert!(parse(&p).unwrap_err().to_string().starts_with("action:"));
    let mut p = policy("", proto::AuthorizationAction::Allow);
    p.name.clear();
    assert!(parse(&p).is_err());
}

#[test]
fn tcp_reduction_fails_closed() {
    let http_op = proto::AuthorizationOperation {
        methods: vec!["GET".into()],
        ports: vec![9000],
        ..Default::default()
    };
    let l4_source = proto::AuthorizationSource {
        namespaces: vec!["apps".into()],
        request_principals: vec!["*".into()],
        ..Default::default()
    };
    let header = proto::AuthorizationCondition {
        key: "request.headers[x]".into(),
        values: vec!["1".into()],
        not_values: vec![],
    };
    let only_l4 = rule_with(
        vec![proto::AuthorizationSource { namespaces: vec!["ops".into()], ..Default::default() }],
        vec![],
        vec![],
    );
    let rules = vec![
        rule_with(vec![l4_source.clone()], vec![http_op.clone()], vec![header.clone()]),
        only_l4.clone(),
    ];
    let mut allow = policy("allow", proto::AuthorizationAction::Allow);
    allow.rules = rules.clone();
    let a = parse(&allow).unwrap();
    assert_eq!(a.tcp.rules.len(), 1, "the HTTP rule is dropped: the policy allows less");
    assert_eq!(a.tcp.rules[0], a.http.rules[1]);

    let mut deny = policy("deny", proto::AuthorizationAction::Deny);
    deny.rules = rules;
    let d = parse(&deny).unwrap();
    assert_eq!(d.tcp.rules.len(), 2, "DENY rules are kept");
    let reduced = &d.tcp.rules[0];
    assert!(reduced.from[0].request_principals.is_empty());
    assert_eq!(reduced.from[0].namespaces, vec![StringMatch::Exact("apps".into())]);
    assert!(reduced.to[0].methods.is_empty(), "methods lost: it denies every method");
    assert_eq!(reduced.to[0].ports, vec![9000], "ports are L4 and stay");
    assert!(reduced.when.is_empty());
}

#[test]
fn the_index_puts_waypoint_wide_policies_everywhere_and_service_ones_on_their_service() {
    let me = "apps/waypoint";
    let mut wide = policy("wide", proto::AuthorizationAction::Deny);
    wide.waypoints = vec![me.into()];
    let mut other_waypoint = policy("elsewhere", proto::AuthorizationAction::Deny);
    other_waypoint.waypoints = vec!["apps/other".into()];
    let mut web = policy("web", proto::AuthorizationAction::Allow);
    web.services = vec!["apps/web".into(), "apps/web".into()];
    let mut both = policy("both", proto::AuthorizationAction::Allow);
    both.waypoints = vec![me.into()];
    both.services = vec!["apps/web".into()];
    let mut dry = policy("dry", proto::AuthorizationAction::Deny);
    dry.services = vec!["apps/api".into()];
    dry.dry_run = true;
    let parsed: Vec<AttachedPolicy> =
        [wide, other_waypoint, web, both, dry].iter().map(|p| parse(p).unwrap()).collect();
    let index = PolicyIndex::new(&parsed, me);
    fn names(a: &[Policy]) -> Vec<&str> {
        a.iter().map(|p| p.name.as_str()).collect()
    }
    let web = index.for_service("apps/web");
    assert_eq!(names(&web.http), ["apps/wide", "apps/both", "apps/web"], "each once");
    assert!(web.http_with_dry_run.is_empty(), "no dry-run policy: nothing to compare");
    assert_eq!(names(&index.for_workload().http), ["apps/wide", "apps/both"]);
    assert_eq!(names(&index.for_service("apps/unknown").http), ["apps/wide", "apps/both"]);
    let api = index.for_service("apps/api");
    assert_eq!(names(&api.http), ["apps/wide", "apps/both"], "dry-run is not enforced");
    assert_eq!(names(&api.http_with_dry_run), ["apps/wide", "apps/both", "apps/dry"]);
    assert_eq!(names(&api.tcp_with_dry_run), ["apps/wide", "apps/both", "apps/dry"]);
    assert!(!api.is_empty());
    assert!(PolicyIndex::new(std::iter::empty(), me).for_workload().is_empty());
}
