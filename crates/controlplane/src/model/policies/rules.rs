//! One AuthorizationPolicy rule → one L4 [`Rule`], failing closed where a
//! node proxy cannot check what the rule says (see the module above).

use mesh_core::policy::{Action, Clause, IpNet, Match, Rule, StringMatch};

use crate::config::istio::{Condition, Operation, PolicyRule, Source};

pub(super) enum RuleOutcome {
    /// Keep the rule; these conditions were ignored (DENY only).
    Keep(Rule, Vec<String>),
    /// Drop the rule (ALLOW), because of these conditions.
    Drop(Vec<String>),
}

/// One `from`/`to`/`when` entry: the L4 match, and what could not be said.
struct Translated {
    matcher: Match,
    lost: Vec<String>,
}

/// Translates `rule` of a policy in `namespace` (the namespace a bare
/// `serviceAccounts` name belongs to).
pub(super) fn translate_rule(rule: &PolicyRule, action: Action, namespace: &str) -> RuleOutcome {
    let mut clauses = Vec::new();
    let mut lost_all = Vec::new();
    let groups: Vec<Vec<Translated>> = vec![
        rule.from.iter().enumerate().map(|(i, f)| source(&f.source, i, namespace)).collect(),
        rule.to.iter().enumerate().map(|(i, t)| operation(&t.operation, i)).collect(),
    ];
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let lost: Vec<String> = group.iter().flat_map(|t| t.lost.clone()).collect();
        if !lost.is_empty() && action == Action::Allow {
            return RuleOutcome::Drop(lost);
        }
        lost_all.extend(lost);
        // A DENY entry left with no condition (all it said was lost)
        // matches everything: so does the whole (OR-ed) clause, which then
        // constrains nothing, and the rule denies more. (An entry that was
        // empty to begin with is reported as lost, so an ALLOW never gets
        // here with one.)
        if group.iter().any(|t| t.matcher.is_empty()) {
            continue;
        }
        clauses.push(Clause { matches: group.into_iter().map(|t| t.matcher).collect() });
    }
    for condition in &rule.when {
        let t = when(condition);
        if !t.lost.is_empty() {
            if action == Action::Allow {
                return RuleOutcome::Drop(t.lost);
            }
            lost_all.extend(t.lost);
            continue;
        }
        clauses.push(Clause { matches: vec![t.matcher] });
    }
    lost_all.sort();
    lost_all.dedup();
    RuleOutcome::Keep(Rule { clauses }, lost_all)
}

fn source(s: &Source, index: usize, namespace: &str) -> Translated {
    let mut lost = Vec::new();
    let strings = |v: &[String]| v.iter().map(|p| StringMatch::parse(p)).collect::<Vec<_>>();
    let mut m = Match {
        principals: strings(&s.principals),
        not_principals: strings(&s.not_principals),
        namespaces: strings(&s.namespaces),
        not_namespaces: strings(&s.not_namespaces),
        ..Match::default()
    };
    m.principals.extend(service_accounts(
        "serviceAccounts",
        &s.service_accounts,
        namespace,
        &mut lost,
    ));
    m.not_principals.extend(service_accounts(
        "notServiceAccounts",
        &s.not_service_accounts,
        namespace,
        &mut lost,
    ));
    m.source_ips = blocks("source.ipBlocks", &s.ip_blocks, &mut lost);
    m.not_source_ips = blocks("source.notIpBlocks", &s.not_ip_blocks, &mut lost);
    // The rest are L7: a node proxy sees neither the JWT nor the client
    // address an HTTP proxy reports in headers (`remoteIpBlocks`; the
    // connection's own source is `ipBlocks`).
    for (field, values) in [
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        if !values.is_empty() {
            lost.push(format!("source.{field}"));
        }
    }
    if m.is_empty() && lost.is_empty() {
        lost.push(format!("from[{index}].source is empty (it would match every caller)"));
    }
    Translated { matcher: m, lost }
}

fn operation(o: &Operation, index: usize) -> Translated {
    let mut lost = Vec::new();
    let m = Match {
        destination_ports: ports("ports", &o.ports, &mut lost),
        not_destination_ports: ports("notPorts", &o.not_ports, &mut lost),
        ..Match::default()
    };
    for (field, values) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        if !values.is_empty() {
            lost.push(format!("operation.{field}"));
        }
    }
    if m.is_empty() && lost.is_empty() {
        lost.push(format!("to[{index}].operation is empty (it would match every connection)"));
    }
    Translated { matcher: m, lost }
}

fn when(c: &Condition) -> Translated {
    let mut lost = Vec::new();
    let mut m = Match::default();
    let strings = |v: &[String]| v.iter().map(|s| StringMatch::parse(s)).collect::<Vec<_>>();
    match c.key.as_str() {
        "source.ip" => {
            m.source_ips = blocks("when.values", &c.values, &mut lost);
            m.not_source_ips = blocks("when.notValues", &c.not_values, &mut lost);
        }
        "destination.ip" => {
            m.destination_ips = blocks("when.values", &c.values, &mut lost);
            m.not_destination_ips = blocks("when.notValues", &c.not_values, &mut lost);
        }
        "destination.port" => {
            m.destination_ports = ports("when.values", &c.values, &mut lost);
            m.not_destination_ports = ports("when.notValues", &c.not_values, &mut lost);
        }
        "source.namespace" => {
            m.namespaces = strings(&c.values);
            m.not_namespaces = strings(&c.not_values);
        }
        "source.principal" => {
            m.principals = strings(&c.values);
            m.not_principals = strings(&c.not_values);
        }
        // `remote.ip` (from HTTP headers) and every other key are L7.
        other => lost.push(format!("when {other}")),
    }
    if m.is_empty() && lost.is_empty() {
        lost.push(format!("when {} without values", c.key));
    }
    Translated { matcher: m, lost }
}

/// `serviceAccounts` entries (`<namespace>/<name>`, or `<name>` in the
/// policy's namespace) as principal matches: the principal
/// `<trust domain>/ns/<namespace>/sa/<name>` in any trust domain (a
/// suffix match is exact here, since no part of a principal may contain
/// `/`).
fn service_accounts(
    field: &str,
    values: &[String],
    namespace: &str,
    lost: &mut Vec<String>,
) -> Vec<StringMatch> {
    let valid = |s: &str| !s.is_empty() && !s.contains(['/', '*']);
    let mut out = Vec::new();
    for value in values {
        let (ns, name) = value.split_once('/').unwrap_or((namespace, value.as_str()));
        if valid(ns) && valid(name) {
            out.push(StringMatch::Suffix(format!("/ns/{ns}/sa/{name}")));
        } else {
            lost.push(format!("source.{field} value {value:?} (not <namespace>/<name> or <name>)"));
        }
    }
    out
}

fn blocks<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a String>,
    lost: &mut Vec<String>,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    for value in values {
        match IpNet::parse(value) {
            Some(net) => out.push(net),
            None => lost.push(format!("{field} value {value:?} (not an IP or CIDR)")),
        }
    }
    out
}

fn ports(field: &str, values: &[String], lost: &mut Vec<String>) -> Vec<u16> {
    let mut out = Vec::new();
    for value in values {
        match value.parse::<u16>() {
            Ok(p) if p != 0 => out.push(p),
            _ => lost.push(format!("{field} value {value:?} (not a port)")),
        }
    }
    out
}
