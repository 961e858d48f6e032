//! The authorization policies attached to what a proxy fronts, read from
//! `mesh.l7.Authorization` and indexed by destination.
//!
//! A resource that does not read is an error naming the field, and the xDS
//! client keeps its last good version. The control plane checks policies
//! with the same parsers (`mesh_core::policy::http`) before it sends them,
//! so a refusal here means a control plane of another version, not a typo
//! in a user's policy (which the control plane reduces, never widens, and
//! reports on the object).
//!
//! Each policy is kept twice: as written, for HTTP requests, and reduced
//! for connections proxied as TCP, where no request exists to check HTTP
//! attributes against. The reduction fails closed, as the L4 translation
//! does: an ALLOW (or AUDIT) rule that names an HTTP attribute is dropped
//! (it allows less), a DENY (or CUSTOM) rule loses the HTTP attribute (it
//! denies more).

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::l7 as proto;

use crate::authz::{
    Action, Condition, ConditionKey, IpNet, Operation, PathMatch, Policy, Rule, Source, StringMatch,
};
use crate::config::ConfigError;
use crate::jwt::JwtRule;

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// One policy and what it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedPolicy {
    /// As written, for HTTP requests.
    pub http: Policy,
    /// Reduced for TCP connections (see the module docs).
    pub tcp: Policy,
    /// Every request through these waypoints (`namespace/gateway`).
    pub waypoints: Vec<String>,
    /// Requests to these services (`namespace/hostname`).
    pub services: Vec<String>,
    /// Evaluated and logged, never enforced.
    pub dry_run: bool,
}

impl TryFrom<&proto::Authorization> for AttachedPolicy {
    type Error = ConfigError;

    fn try_from(p: &proto::Authorization) -> Result<Self, ConfigError> {
        if p.namespace.is_empty() || p.name.is_empty() {
            return Err(err("name", "a policy needs a namespace and a name"));
        }
        let action = match proto::AuthorizationAction::try_from(p.action) {
            Ok(proto::AuthorizationAction::Allow) => Action::Allow,
            Ok(proto::AuthorizationAction::Deny) => Action::Deny,
            Ok(proto::AuthorizationAction::Audit) => Action::Audit,
            Ok(proto::AuthorizationAction::Custom) => Action::Custom,
            Err(_) => return Err(err("action", format!("unknown action {}", p.action))),
        };
        let rules = p
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let http = Policy { name: format!("{}/{}", p.namespace, p.name), action, rules };
        let tcp = for_tcp(&http);
        Ok(Self {
            http,
            tcp,
            waypoints: p.waypoints.clone(),
            services: p.services.clone(),
            dry_run: p.dry_run,
        })
    }
}

/// One RequestAuthentication and what it is attached to.
#[derive(Debug, Clone)]
pub struct AttachedAuthentication {
    /// `namespace/name`.
    pub name: String,
    /// Its rules, ready to validate.
    pub rules: Vec<Arc<JwtRule>>,
    /// Every request through these waypoints (`namespace/gateway`).
    pub waypoints: Vec<String>,
    /// Requests to these services (`namespace/hostname`).
    pub services: Vec<String>,
}

impl TryFrom<&proto::Authentication> for AttachedAuthentication {
    type Error = ConfigError;

    fn try_from(a: &proto::Authentication) -> Result<Self, ConfigError> {
        if a.namespace.is_empty() || a.name.is_empty() {
            return Err(err("name", "a policy needs a namespace and a name"));
        }
        let rules = a
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| JwtRule::new(r, &format!("rules[{i}]")).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: format!("{}/{}", a.namespace, a.name),
            rules,
            waypoints: a.waypoints.clone(),
            services: a.services.clone(),
        })
    }
}

fn strings(values: &[String]) -> Vec<StringMatch> {
    values.iter().map(|v| StringMatch::parse(v)).collect()
}

fn blocks(values: &[String], field: &str) -> Result<Vec<IpNet>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            IpNet::parse(v).ok_or_else(|| {
                err(format!("{field}[{i}]"), format!("{v:?} is not an address block"))
            })
        })
        .collect()
}

fn ports(values: &[u32], field: &str) -> Result<Vec<u16>, ConfigError> {
    values
        .iter()
        .map(|p| match u16::try_from(*p) {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(err(field, format!("{p} is not a port"))),
        })
        .collect()
}

fn paths(values: &[String], field: &str) -> Result<Vec<PathMatch>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| PathMatch::parse(v).map_err(|e| err(format!("{field}[{i}]"), e.to_string())))
        .collect()
}

fn lower(values: &[String]) -> Vec<String> {
    values.iter().map(|v| v.to_ascii_lowercase()).collect()
}

fn methods(values: &[String]) -> Vec<String> {
    values.iter().map(|m| m.to_ascii_uppercase()).collect()
}

fn rule(r: &proto::AuthorizationRule, at: &str) -> Result<Rule, ConfigError> {
    let from = r
        .from
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = format!("{at}.from[{i}]");
            Ok(Source {
                principals: strings(&s.principals),
                not_principals: strings(&s.not_principals),
                request_principals: strings(&s.request_principals),
                not_request_principals: strings(&s.not_request_principals),
                namespaces: strings(&s.namespaces),
                not_namespaces: strings(&s.not_namespaces),
                ip_blocks: blocks(&s.ip_blocks, &format!("{at}.ip_blocks"))?,
                not_ip_blocks: blocks(&s.not_ip_blocks, &format!("{at}.not_ip_blocks"))?,
                remote_ip_blocks: blocks(&s.remote_ip_blocks, &format!("{at}.remote_ip_blocks"))?,
                not_remote_ip_blocks: blocks(
                    &s.not_remote_ip_blocks,
                    &format!("{at}.not_remote_ip_blocks"),
                )?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let to =
        r.to.iter()
            .enumerate()
            .map(|(i, o)| {
                let at = format!("{at}.to[{i}]");
                Ok(Operation {
                    // Compared case-insensitively: lower case once, here.
                    hosts: strings(&lower(&o.hosts)),
                    not_hosts: strings(&lower(&o.not_hosts)),
                    ports: ports(&o.ports, &format!("{at}.ports"))?,
                    not_ports: ports(&o.not_ports, &format!("{at}.not_ports"))?,
                    methods: methods(&o.methods),
                    not_methods: methods(&o.not_methods),
                    paths: paths(&o.paths, &format!("{at}.paths"))?,
                    not_paths: paths(&o.not_paths, &format!("{at}.not_paths"))?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
    let when = r
        .when
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("{at}.when[{i}]");
            let key =
                ConditionKey::parse(&c.key).map_err(|e| err(format!("{at}.key"), e.to_string()))?;
            let values = |values: &[String], field: &str| {
                values
                    .iter()
                    .map(|v| key.value(v).map_err(|e| err(format!("{at}.{field}"), e.to_string())))
                    .collect::<Result<Vec<_>, _>>()
            };
            if c.values.is_empty() && c.not_values.is_empty() {
                return Err(err(at, "a condition needs values or not_values"));
            }
            Ok(Condition {
                values: values(&c.values, "values")?,
                not_values: values(&c.not_values, "not_values")?,
                key,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(Rule { from, to, when })
}

/// Whether a source names anything only an HTTP request carries.
fn source_is_http(s: &Source) -> bool {
    !(s.request_principals.is_empty()
        && s.not_request_principals.is_empty()
        && s.remote_ip_blocks.is_empty()
        && s.not_remote_ip_blocks.is_empty())
}

fn operation_is_http(o: &Operation) -> bool {
    !(o.hosts.is_empty()
        && o.not_hosts.is_empty()
        && o.methods.is_empty()
        && o.not_methods.is_empty()
        && o.paths.is_empty()
        && o.not_paths.is_empty())
}

/// The policy as a TCP connection can be judged by it (module docs).
pub fn for_tcp(policy: &Policy) -> Policy {
    let widens_when_dropped = matches!(policy.action, Action::Allow | Action::Audit);
    let rules = policy
        .rules
        .iter()
        .filter_map(|r| {
            let http = r.from.iter().any(source_is_http)
                || r.to.iter().any(operation_is_http)
                || r.when.iter().any(|c| c.key.is_http());
            if !http {
                return Some(r.clone());
            }
            if widens_when_dropped {
                // Dropping the attribute would allow more: drop the rule.
                return None;
            }
            // DENY or CUSTOM: without the attribute, the rule denies more.
            Some(Rule {
                from: r
                    .from
                    .iter()
                    .map(|s| Source {
                        request_principals: Vec::new(),
                        not_request_principals: Vec::new(),
                        remote_ip_blocks: Vec::new(),
                        not_remote_ip_blocks: Vec::new(),
                        ..s.clone()
                    })
                    .collect(),
                to: r
                    .to
                    .iter()
                    .map(|o| Operation {
                        hosts: Vec::new(),
                        not_hosts: Vec::new(),
                        methods: Vec::new(),
                        not_methods: Vec::new(),
                        paths: Vec::new(),
                        not_paths: Vec::new(),
                        ..o.clone()
                    })
                    .collect(),
                when: r.when.iter().filter(|c| !c.key.is_http()).cloned().collect(),
            })
        })
        .collect();
    Policy { name: policy.name.clone(), action: policy.action, rules }
}

/// The policies that apply to one destination.
#[derive(Debug, Clone, Default)]
pub struct Applicable {
    /// Enforced, for HTTP requests.
    pub http: Vec<Policy>,
    /// Enforced, for TCP connections.
    pub tcp: Vec<Policy>,
    /// Enforced plus dry-run, for HTTP requests (empty when no dry-run
    /// policy applies: nothing to compare).
    pub http_with_dry_run: Vec<Policy>,
    /// Enforced plus dry-run, for TCP connections (likewise).
    pub tcp_with_dry_run: Vec<Policy>,
    /// JWT rules (RequestAuthentication): a request's token is validated
    /// against them before the policies are read.
    pub jwt: Vec<Arc<JwtRule>>,
}

impl Applicable {
    /// Whether no policy, enforced or dry-run, and no JWT rule applies:
    /// nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.http_with_dry_run.is_empty() && self.jwt.is_empty()
    }

    fn add(&mut self, p: &AttachedPolicy) {
        if !p.dry_run {
            self.http.push(p.http.clone());
            self.tcp.push(p.tcp.clone());
        }
    }

    fn add_dry_run(&mut self, all: &[&AttachedPolicy]) {
        if all.iter().any(|p| p.dry_run) {
            self.http_with_dry_run = all.iter().map(|p| p.http.clone()).collect();
            self.tcp_with_dry_run = all.iter().map(|p| p.tcp.clone()).collect();
        }
    }
}

/// Every policy that applies to what one waypoint fronts, by destination.
#[derive(Debug, Clone, Default)]
pub struct PolicyIndex {
    /// Requests addressed to a workload: the waypoint-wide policies.
    wide: Arc<Applicable>,
    /// Requests to a service: the waypoint-wide ones plus the service's.
    by_service: HashMap<String, Arc<Applicable>>,
}

impl PolicyIndex {
    /// Indexes `policies` for the waypoint `waypoint` (`namespace/name`).
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a AttachedPolicy>, waypoint: &str) -> Self {
        Self::build(policies, std::iter::empty(), waypoint)
    }

    /// Indexes `policies` and `authentications` for the waypoint
    /// `waypoint` (`namespace/name`).
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a AttachedPolicy>,
        authentications: impl IntoIterator<Item = &'a AttachedAuthentication>,
        waypoint: &str,
    ) -> Self {
        let policies: Vec<&AttachedPolicy> = policies.into_iter().collect();
        let authentications: Vec<&AttachedAuthentication> = authentications.into_iter().collect();
        let reaches_me = |waypoints: &[String]| waypoints.iter().any(|w| w == waypoint);
        let wide: Vec<&AttachedPolicy> =
            policies.iter().copied().filter(|p| reaches_me(&p.waypoints)).collect();
        let wide_jwt: Vec<&AttachedAuthentication> =
            authentications.iter().copied().filter(|a| reaches_me(&a.waypoints)).collect();
        let build = |set: &[&AttachedPolicy], jwt: &[&AttachedAuthentication]| {
            let mut a = Applicable::default();
            set.iter().for_each(|p| a.add(p));
            a.add_dry_run(set);
            a.jwt = jwt.iter().flat_map(|j| j.rules.iter().cloned()).collect();
            Arc::new(a)
        };
        let mut services: HashMap<&str, (Vec<&AttachedPolicy>, Vec<&AttachedAuthentication>)> =
            HashMap::new();
        for p in &policies {
            for s in &p.services {
                let (set, _) =
                    services.entry(s.as_str()).or_insert_with(|| (wide.clone(), wide_jwt.clone()));
                if !set.iter().any(|q| std::ptr::eq(*q, *p)) {
                    set.push(p);
                }
            }
        }
        for a in &authentications {
            for s in &a.services {
                let (_, set) =
                    services.entry(s.as_str()).or_insert_with(|| (wide.clone(), wide_jwt.clone()));
                if !set.iter().any(|q| std::ptr::eq(*q, *a)) {
                    set.push(a);
                }
            }
        }
        Self {
            wide: build(&wide, &wide_jwt),
            by_service: services
                .into_iter()
                .map(|(s, (set, jwt))| (s.to_string(), build(&set, &jwt)))
                .collect(),
        }
    }

    /// What applies to a request addressed to `service` (`namespace/hostname`).
    pub fn for_service(&self, service: &str) -> Arc<Applicable> {
        self.by_service.get(service).unwrap_or(&self.wide).clone()
    }

    /// What applies to a request addressed to a workload directly.
    pub fn for_workload(&self) -> Arc<Applicable> {
        self.wide.clone()
    }
}

#[cfg(test)]
#[path = "policies_tests.rs"]
mod tests;
