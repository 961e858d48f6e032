#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use http::HeaderMap;
use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A request with everything settable; the defaults are an ordinary GET.
struct Req {
    principal: Option<String>,
    namespace: String,
    source_ip: IpAddr,
    host: String,
    method: String,
    path: String,
    port: u16,
    headers: HeaderMap,
    auth: Option<AuthFacts>,
}

impl Default for Req {
    fn default() -> Self {
        Self {
            principal: Some("cluster.local/ns/apps/sa/web".into()),
            namespace: "apps".into(),
            source_ip: ip("10.0.1.5"),
            host: "reviews.apps.svc.cluster.local:80".into(),
            method: "GET".into(),
            path: "/status".into(),
            port: 80,
            headers: HeaderMap::new(),
            auth: None,
        }
    }
}

impl Req {
    fn decide(&self, policies: &[Policy]) -> Decision {
        let facts = RequestFacts {
            source_principal: self.principal.as_deref(),
            source_namespace: &self.namespace,
            source_ip: self.source_ip,
            remote_ip: self.source_ip,
            host: &self.host,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            destination_ip: ip("10.0.2.2"),
            destination_port: self.port,
            sni: None,
            auth: self.auth.as_ref(),
        };
        evaluate(policies, &facts)
    }

    fn allowed(&self, policies: &[Policy]) -> bool {
        self.decide(policies).allowed
    }
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy { name: format!("apps/{name}"), action, rules }
}

fn s(v: &str) -> StringMatch {
    StringMatch::parse(v)
}

fn to(op: Operation) -> Rule {
    Rule { to: vec![op], ..Rule::default() }
}

fn from(src: Source) -> Rule {
    Rule { from: vec![src], ..Rule::default() }
}

fn when(key: ConditionKey, values: &[&str], not_values: &[&str]) -> Rule {
    Rule {
        when: vec![Condition {
            key: key.clone(),
            values: values.iter().map(|v| key.value(v).unwrap()).collect(),
            not_values: not_values.iter().map(|v| key.value(v).unwrap()).collect(),
        }],
        ..Rule::default()
    }
}

fn paths(p: &[&str]) -> Operation {
    Operation {
        paths: p.iter().map(|p| PathMatch::parse(p).unwrap()).collect(),
        ..Operation::default()
    }
}

#[test]
fn no_policy_allows_and_an_allow_policy_denies_what_it_does_not_match() {
    let get = Req::default();
    assert!(get.allowed(&[]));
    let only_post = policy(
        "post",
        Action::Allow,
        vec![to(Operation { methods: vec!["POST".into()], ..Operation::default() })],
    );
    let d = get.decide(std::slice::from_ref(&only_post));
    assert!(!d.allowed);
    assert_eq!(d.reason, "RBAC: access denied");
    // No rules: allow nothing; one empty rule: allow everything.
    assert!(!get.allowed(&[policy("nothing", Action::Allow, vec![])]));
    assert!(get.allowed(&[policy("all", Action::Allow, vec![Rule::default()])]));
}

#[test]
fn order_is_custom_then_deny_then_allow_and_audit_never_decides() {
    let get = Req::default();
    let all = || vec![Rule::default()];
    let allow = policy("allow", Action::Allow, all());
    let deny = policy("deny", Action::Deny, all());
    let custom = policy("custom", Action::Custom, all());
    let audit = policy("audit", Action::Audit, all());
    let d = get.decide(&[allow.clone(), deny.clone()]);
    assert!(!d.allowed && d.reason.contains("apps/deny"), "{d:?}");
    let d = get.decide(&[allow.clone(), custom]);
    assert!(!d.allowed && d.reason.contains("CUSTOM"), "{d:?}");
    let d = get.decide(std::slice::from_ref(&audit));
    assert!(d.allowed);
    assert_eq!(d.audited, vec!["apps/audit".to_string()]);
    // A DENY that does not match leaves the ALLOW to decide.
    let deny_post = policy(
        "deny-post",
        Action::Deny,
        vec![to(Operation { methods: vec!["POST".into()], ..Operation::default() })],
    );
    assert!(get.allowed(&[allow, deny_post, audit]));
    // DENY with no rules matches nothing.
    assert!(get.allowed(&[policy("empty", Action::Deny, vec![])]));
}

#[test]
fn sources_principals_namespaces_ip_blocks_and_request_principals() {
    let allow = |src: Source| [policy("p", Action::Allow, vec![from(src)])];
    let get = Req::default();
    assert!(get.allowed(&allow(Source {
        principals: vec![s("cluster.local/ns/apps/sa/web")],
        ..Source::default()
    })));
    assert!(get.allowed(&allow(Source { principals: vec![s("*/sa/web")], ..Source::default() })));
    assert!(!get.allowed(&allow(Source {
        not_principals: vec![s("cluster.local/ns/apps/*")],
        ..Source::default()
    })));
    assert!(get.allowed(&allow(Source { namespaces: vec![s("apps")], ..Source::default() })));
    assert!(!get.allowed(&allow(Source { not_namespaces: vec![s("apps")], ..Source::default() })));
    let block = |b: &str| IpNet::parse(b).unwrap();
    assert!(
        get.allowed(&allow(Source { ip_blocks: vec![block("10.0.0.0/16")], ..Source::default() }))
    );
    assert!(
        !get.allowed(&allow(Source { ip_blocks: vec![block("10.1.0.0/16")], ..Source::default() }))
    );
    assert!(
        !get.allowed(&allow(Source {
            not_ip_blocks: vec![block("10.0.1.5")],
            ..Source::default()
        }))
    );
    assert!(get.allowed(&allow(Source {
        remote_ip_blocks: vec![block("0.0.0.0/0")],
        ..Source::default()
    })));
    // Plaintext: no principal; `*` needs one, a not-list lets it in.
    let plaintext = Req { principal: None, namespace: String::new(), ..Req::default() };
    assert!(!plaintext.allowed(&allow(Source { principals: vec![s("*")], ..Source::default() })));
    assert!(plaintext.allowed(&allow(Source {
        not_principals: vec![s("cluster.local/ns/apps/sa/web")],
        ..Source::default()
    })));
    // requestPrincipals: a token's iss/sub; no token, no principal.
    let rp = Source { request_principals: vec![s("https://issuer/*")], ..Source::default() };
    assert!(!get.allowed(&allow(rp.clone())));
    let with_token = Req {
        auth: Some(AuthFacts { principal: "https://issuer/alice".into(), ..AuthFacts::default() }),
        ..Req::default()
    };
    assert!(with_token.allowed(&allow(rp)));
}

#[test]
fn operations_hosts_ports_methods_and_paths() {
    let allow = |op: Operation| [policy("p", Action::Allow, vec![to(op)])];
    let get = Req::default();
    let host = |h: &str| Operation { hosts: vec![s(h)], ..Operation::default() };
    assert!(get.allowed(&allow(host("reviews.apps.svc.cluster.local"))), "port stripped");
    assert!(get.allowed(&allow(host("REVIEWS.apps.svc.cluster.local:80"))), "case-insensitive");
    assert!(get.allowed(&allow(host("*.apps.svc.cluster.local"))));
    assert!(!get.allowed(&allow(host("ratings.apps.svc.cluster.local"))));
    assert!(get.allowed(&allow(Operation { ports: vec![80], ..Operation::default() })));
    assert!(!get.allowed(&allow(Operation { not_ports: vec![80], ..Operation::default() })));
    assert!(get.allowed(&allow(paths(&["/status"]))));
    assert!(get.allowed(&allow(paths(&["/stat*"]))));
    assert!(get.allowed(&allow(paths(&["*tus"]))));
    assert!(get.allowed(&allow(paths(&["*"]))));
    assert!(!get.allowed(&allow(paths(&["/admin"]))));
    assert!(!get.allowed(&allow(Operation {
        not_paths: vec![PathMatch::parse("/status").unwrap()],
        ..Operation::default()
    })));
}

#[test]
fn path_templates_match_whole_segments() {
    let t = |p: &str| PathMatch::parse(p).unwrap();
    assert!(t("/api/{*}/items").matches("/api/42/items"));
    assert!(!t("/api/{*}/items").matches("/api/4/2/items"));
    assert!(!t("/api/{*}/items").matches("/api//items"));
    assert!(t("/static/{**}").matches("/static/css/site.css"));
    assert!(t("/static/{**}").matches("/static/"));
    assert!(!t("/static/{**}").matches("/statics/x"));
    assert!(t("/{*}/{*}").matches("/a/b"));
    assert!(!t("/{*}/{*}").matches("/a/b/c"));
    for bad in ["/a/{**}/b", "/a/x{*}", "no-slash/{*}", "/a/{x}"] {
        assert!(PathMatch::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn methods_compare_upper_cased_so_a_lower_case_method_cannot_slip_past_a_deny() {
    let deny_post = [policy(
        "no-post",
        Action::Deny,
        vec![to(Operation { methods: vec!["POST".into()], ..Operation::default() })],
    )];
    for method in ["POST", "post", "Post"] {
        let r = Req { method: method.into(), ..Req::default() };
        assert!(!r.allowed(&deny_post), "{method}");
    }
}

#[test]
fn conditions_on_every_documented_attribute() {
    let allow = |rule: Rule| [policy("p", Action::Allow, vec![rule])];
    let mut headers = HeaderMap::new();
    headers.insert("x-user", "alice".parse().unwrap());
    let r = Req { headers, ..Req::default() };
    let header = || ConditionKey::RequestHeader("x-user".into());
    assert!(r.allowed(&allow(when(header(), &["alice"], &[]))));
    assert!(r.allowed(&allow(when(header(), &["ali*"], &[]))));
    assert!(!r.allowed(&allow(when(header(), &[], &["alice"]))));
    assert!(!Req::default().allowed(&allow(when(header(), &["*"], &[]))), "absent header");
    assert!(r.allowed(&allow(when(ConditionKey::SourceIp, &["10.0.1.5"], &[]))));
    assert!(r.allowed(&allow(when(ConditionKey::RemoteIp, &["10.0.1.5"], &[]))));
    assert!(r.allowed(&allow(when(ConditionKey::SourceNamespace, &["apps"], &[]))));
    assert!(r.allowed(&allow(when(ConditionKey::SourcePrincipal, &["*/sa/web"], &[]))));
    assert!(r.allowed(&allow(when(ConditionKey::DestinationIp, &["10.0.2.2"], &[]))));
    assert!(r.allowed(&allow(when(ConditionKey::DestinationPort, &["80"], &[]))));
    // Address keys take blocks, as Istio's do.
    assert!(r.allowed(&allow(when(ConditionKey::SourceIp, &["10.0.0.0/16"], &[]))));
    assert!(!r.allowed(&allow(when(ConditionKey::SourceIp, &[], &["10.0.0.0/8"]))));
    assert!(!r.allowed(&allow(when(ConditionKey::DestinationIp, &["192.168.0.0/16"], &[]))));
    assert!(!r.allowed(&allow(when(ConditionKey::ConnectionSni, &["*"], &[]))));
    let claims: serde_json::Value = serde_json::json!({
        "groups": ["dev", "ops"],
        "org": {"team": {"name": "payments"}},
        "admin": true,
    });
    let token = Req {
        auth: Some(AuthFacts {
            principal: "https://issuer/alice".into(),
            audiences: vec!["api".into(), "web".into()],
            presenter: Some("cli".into()),
            claims: claims.as_object().unwrap().clone(),
        }),
        ..Req::default()
    };
    let claim =
        |path: &[&str]| ConditionKey::AuthClaim(path.iter().map(|p| p.to_string()).collect());
    assert!(token.allowed(&allow(when(
        ConditionKey::AuthPrincipal,
        &["https://issuer/alice"],
        &[]
    ))));
    assert!(token.allowed(&allow(when(ConditionKey::AuthAudiences, &["web"], &[]))));
    assert!(token.allowed(&allow(when(ConditionKey::AuthPresenter, &["cli"], &[]))));
    assert!(token.allowed(&allow(when(claim(&["groups"]), &["ops"], &[]))));
    assert!(token.allowed(&allow(when(claim(&["org", "team", "name"]), &["payments"], &[]))));
    assert!(token.allowed(&allow(when(claim(&["admin"]), &["true"], &[]))));
    assert!(!token.allowed(&allow(when(claim(&["org", "missing"]), &["*"], &[]))));
    assert!(!Req::default().allowed(&allow(when(claim(&["groups"]), &["ops"], &[]))), "no token");
}

#[test]
fn a_header_sent_twice_cannot_hide_a_value_from_a_deny() {
    let deny_admin = [policy(
        "no-admin",
        Action::Deny,
        vec![when(ConditionKey::RequestHeader("x-role".into()), &["admin"], &[])],
    )];
    let mut headers = HeaderMap::new();
    headers.append("x-role", "guest".parse().unwrap());
    headers.append("x-role", "admin".parse().unwrap());
    let r = Req { headers, ..Req::default() };
    assert!(!r.allowed(&deny_admin));
    // And an ALLOW that says "not admin" does not let it through either.
    let allow_not_admin = [policy(
        "not-admin",
        Action::Allow,
        vec![when(ConditionKey::RequestHeader("x-role".into()), &[], &["admin"])],
    )];
    assert!(!r.allowed(&allow_not_admin));
}

#[test]
fn paths_are_normalised_before_matching_and_ambiguous_ones_refused() {
    let ok = |raw: &str, want: &str| assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    ok("/status", "/status");
    ok("/admin/../status", "/status");
    ok("/status/./x", "/status/x");
    ok("//admin", "/admin");
    ok("/a//b///c", "/a/b/c");
    ok("/%61dmin", "/admin");
    ok("/%2e%2e/admin", "/admin");
    ok("/%2E%2E/%2e/admin/", "/admin/");
    ok("/../../etc", "/etc");
    ok("/a/b/..", "/a/");
    ok("/", "/");
    ok("/status?x=/admin", "/status");
    ok("/caf%c3%a9", "/caf%C3%A9");
    ok("/café", "/café");
    let bad = |raw: &str, want: PathError| assert_eq!(normalize_path(raw), Err(want), "{raw}");
    bad("/admin%2fx", PathError::AmbiguousSlash);
    bad("/admin%5Cx", PathError::AmbiguousSlash);
    bad("/admin\\x", PathError::AmbiguousSlash);
    bad("/a%zz", PathError::BadEscape);
    bad("/a%4", PathError::BadEscape);
    bad("/a%00b", PathError::ControlCharacter);
    bad("admin", PathError::NotAbsolute);
    // So a DENY on /admin holds whatever spelling reaches it.
    let deny = [policy("no-admin", Action::Deny, vec![to(paths(&["/admin", "/admin/*"]))])];
    for raw in ["/admin", "//admin", "/x/../admin", "/%61dmin", "/./admin/", "/admin/./a"] {
        let r = Req { path: normalize_path(raw).unwrap(), ..Req::default() };
        assert!(!r.allowed(&deny), "{raw}");
    }
}

#[test]
fn ip_blocks() {
    let b = |s: &str| IpNet::parse(s).unwrap();
    assert!(b("10.0.0.0/8").contains(&ip("10.200.1.1")));
    assert!(!b("10.0.0.0/8").contains(&ip("11.0.0.1")));
    assert!(b("0.0.0.0/0").contains(&ip("1.2.3.4")));
    assert!(b("fd00::/8").contains(&ip("fd12::1")));
    assert!(!b("fd00::/8").contains(&ip("10.0.0.1")));
    assert!(b("10.0.1.5").contains(&ip("10.0.1.5")));
    assert!(!b("10.0.1.5").contains(&ip("10.0.1.6")));
    for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x"] {
        assert!(IpNet::parse(bad).is_none(), "{bad}");
    }
}

// === a naive reference, for random policies and requests ===

/// A policy in Istio's raw string forms, read by the reference directly.
#[derive(Debug, Clone)]
struct RawPolicy {
    action: Action,
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Default)]
struct RawRule {
    principals: Option<Vec<String>>,
    not_principals: Vec<String>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    not_paths: Vec<String>,
    header: Option<(Vec<String>, Vec<String>)>,
    ports: Option<Vec<u16>>,
}

#[derive(Debug, Clone)]
struct RawReq {
    principal: Option<String>,
    method: String,
    path: String,
    port: u16,
    header: Vec<String>,
}

/// Glob to regex: `*` alone is "non-empty", a leading or trailing `*` any
/// text, `{*}` one segment, `{**}` the rest.
fn glob(pattern: &str) -> regex::Regex {
    let body = if pattern == "*" {
        ".+".to_string()
    } else if pattern.contains('{') {
        pattern
            .split('/')
            .map(|seg| match seg {
                "{*}" => "[^/]+".to_string(),
                "{**}" => ".*".to_string(),
                s => regex::escape(s),
            })
            .collect::<Vec<_>>()
            .join("/")
    } else if let Some(rest) = pattern.strip_prefix('*') {
        format!(".*{}", regex::escape(rest))
    } else if let Some(rest) = pattern.strip_suffix('*') {
        format!("{}.*", regex::escape(rest))
    } else {
        regex::escape(pattern)
    };
    regex::Regex::new(&format!("^{body}$")).unwrap()
}

fn naive(policies: &[RawPolicy], r: &RawReq) -> bool {
    let any_glob = |pats: &[String], v: &str| pats.iter().any(|p| glob(p).is_match(v));
    let rule_ok = |rule: &RawRule| {
        let mut ok = true;
        if let Some(list) = &rule.principals {
            ok &= r.principal.as_deref().is_some_and(|p| any_glob(list, p));
        }
        if r.principal.as_deref().is_some_and(|p| any_glob(&rule.not_principals, p)) {
            ok = false;
        }
        if let Some(list) = &rule.methods {
            ok &= list.iter().any(|m| m.to_uppercase() == r.method.to_uppercase());
        }
        if let Some(list) = &rule.paths {
            ok &= any_glob(list, &r.path);
        }
        if any_glob(&rule.not_paths, &r.path) {
            ok = false;
        }
        if let Some(list) = &rule.ports {
            ok &= list.contains(&r.port);
        }
        if let Some((values, not_values)) = &rule.header {
            let mut seen = r.header.clone();
            if r.header.len() > 1 {
                seen.push(r.header.join(","));
            }
            if !values.is_empty() {
                ok &= seen.iter().any(|v| any_glob(values, v));
            }
            if seen.iter().any(|v| any_glob(not_values, v)) {
                ok = false;
            }
        }
        ok
    };
    let matched = |p: &RawPolicy| p.rules.iter().any(rule_ok);
    for p in policies {
        if matches!(p.action, Action::Custom | Action::Deny) && matched(p) {
            return false;
        }
    }
    let allows: Vec<&RawPolicy> = policies.iter().filter(|p| p.action == Action::Allow).collect();
    allows.is_empty() || allows.into_iter().any(matched)
}

fn compile(raw: &[RawPolicy]) -> Vec<Policy> {
    raw.iter()
        .enumerate()
        .map(|(i, p)| Policy {
            name: format!("apps/p{i}"),
            action: p.action,
            rules: p
                .rules
                .iter()
                .map(|r| {
                    let strings = |v: &[String]| v.iter().map(|x| StringMatch::parse(x)).collect();
                    let path_list = |v: &[String]| {
                        v.iter().map(|x| PathMatch::parse(x).unwrap()).collect::<Vec<_>>()
                    };
                    let source = Source {
                        principals: r.principals.as_deref().map(strings).unwrap_or_default(),
                        not_principals: strings(&r.not_principals),
                        ..Source::default()
                    };
                    let operation = Operation {
                        methods: r.methods.clone().unwrap_or_default(),
                        paths: r.paths.as_deref().map(path_list).unwrap_or_default(),
                        not_paths: path_list(&r.not_paths),
                        ports: r.ports.clone().unwrap_or_default(),
                        ..Operation::default()
                    };
                    Rule {
                        from: if source == Source::default() { vec![] } else { vec![source] },
                        to: if operation == Operation::default() {
                            vec![]
                        } else {
                            vec![operation]
                        },
                        when: r
                            .header
                            .iter()
                            .map(|(v, n)| Condition {
                                key: ConditionKey::RequestHeader("x-h".into()),
                                values: strings(v).into_iter().map(ConditionValue::Text).collect(),
                                not_values: strings(n)
                                    .into_iter()
                                    .map(ConditionValue::Text)
                                    .collect(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect()
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(options).prop_map(str::to_string)
}

const PRINCIPALS: &[&str] =
    &["cluster.local/ns/a/sa/x", "cluster.local/ns/b/sa/y", "cluster.local/ns/a/*", "*/sa/y", "*"];
const PATHS: &[&str] = &["/a", "/a/*", "*/b", "/a/{*}", "/{*}/b", "/a/{**}", "*", "/c"];
const VALUES: &[&str] = &["v1", "v2", "v*", "*2", "*", "v1,v2", "*,w"];

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (
        proptest::option::of(proptest::collection::vec(pick(PRINCIPALS), 1..3)),
        proptest::collection::vec(pick(PRINCIPALS), 0..2),
        proptest::option::of(proptest::collection::vec(pick(&["GET", "POST", "delete"]), 1..3)),
        proptest::option::of(proptest::collection::vec(pick(PATHS), 1..3)),
        proptest::collection::vec(pick(PATHS), 0..2),
        proptest::option::of((
            proptest::collection::vec(pick(VALUES), 0..2),
            proptest::collection::vec(pick(VALUES), 0..2),
        )),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just(80u16), Just(8080u16)],
            1..2,
        )),
    )
        .prop_map(|(principals, not_principals, methods, paths, not_paths, header, ports)| {
            RawRule { principals, not_principals, methods, paths, not_paths, header, ports }
        })
}

fn raw_policy() -> impl Strategy<Value = RawPolicy> {
    (
        prop_oneof![
            Just(Action::Allow),
            Just(Action::Deny),
            Just(Action::Audit),
            Just(Action::Custom)
        ],
        proptest::collection::vec(raw_rule(), 0..3),
    )
        .prop_map(|(action, rules)| RawPolicy { action, rules })
}

fn raw_req() -> impl Strategy<Value = RawReq> {
    (
        proptest::option::of(pick(&["cluster.local/ns/a/sa/x", "cluster.local/ns/b/sa/y"])),
        pick(&["GET", "post", "DELETE"]),
        pick(&["/a", "/a/b", "/a/b/c", "/c", "/x/b", "/"]),
        prop_oneof![Just(80u16), Just(8080u16)],
        proptest::collection::vec(pick(&["v1", "v2", "w"]), 0..3),
    )
        .prop_map(|(principal, method, path, port, header)| RawReq {
            principal,
            method,
            path,
            port,
            header,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_a_naive_reference(
        policies in proptest::collection::vec(raw_policy(), 0..4),
        request in raw_req(),
    ) {
        let mut headers = HeaderMap::new();
        for v in &request.header {
            headers.append("x-h", v.parse().unwrap());
        }
        let req = Req {
            principal: request.principal.clone(),
            method: request.method.clone(),
            path: request.path.clone(),
            port: request.port,
            headers,
            ..Req::default()
        };
        let ours = req.allowed(&compile(&policies));
        prop_assert_eq!(ours, naive(&policies, &request), "policies {:?} request {:?}", policies, request);
    }

    #[test]
    fn normalising_never_panics_and_is_idempotent(raw in "/[a-z%./\\\\0-9A-F?]{0,24}") {
        if let Ok(once) = normalize_path(&raw) {
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{}", once);
            prop_assert!(!once.split('/').any(|s| s == ".." || s == "."), "{}", once);
            prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
        }
    }
}

#[test]
fn when_keys_are_istios_and_nothing_else() {
    let key = |k: &str| ConditionKey::parse(k);
    assert_eq!(
        key("request.headers[X-User]").unwrap(),
        ConditionKey::RequestHeader("x-user".into())
    );
    assert_eq!(
        key("request.auth.claims[org][team]").unwrap(),
        ConditionKey::AuthClaim(vec!["org".into(), "team".into()])
    );
    for k in [
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
        "request.headers[a]",
        "request.auth.claims[a][b]",
    ] {
        assert_eq!(key(k).unwrap().to_string(), k, "round trip");
    }
    for bad in [
        "request.header[x]",
        "request.headers[]",
        "request.headers[a][b]",
        "request.headers[a",
        "request.auth.claims",
        "request.auth.claims[a]x",
        "source.ips",
        "",
        "experimental.envoy.filters.x",
    ] {
        let e = key(bad).unwrap_err();
        assert_eq!(e.key, bad, "the error names the key");
    }
    assert!(ConditionKey::SourceIp.value("10.0.0.0/33").is_err());
    assert!(
        ConditionKey::SourceIp.value("not-an-ip").unwrap_err().to_string().contains("not-an-ip")
    );
    assert!(ConditionKey::DestinationPort.value("http").is_err());
    assert!(ConditionKey::DestinationPort.value("8080").is_ok());
    assert!(ConditionKey::RequestHeader("a".into()).value("x*").is_ok());
}
