//! Deciding whether one connection is allowed: pure, no I/O.

use std::net::IpAddr;

use super::{Action, Authorization, IpNet, Match, Rule, StringMatch};
use crate::Identity;

/// What is known about a connection at L4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The peer's verified identity; `None` for plaintext.
    pub source_identity: Option<Identity>,
    /// Source IP.
    pub source_ip: IpAddr,
    /// Destination IP.
    pub destination_ip: IpAddr,
    /// Destination port.
    pub destination_port: u16,
}

/// Which policy and rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// Index of the matching rule.
    pub rule: usize,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionReason {
    /// A DENY policy matched.
    DeniedByPolicy(PolicyRef),
    /// ALLOW policies apply and this one matched.
    AllowedByPolicy(PolicyRef),
    /// ALLOW policies apply and none matched.
    NoAllowPolicyMatched,
    /// No policy applies: allowed.
    NoPolicies,
}

/// The verdict on a connection, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Why.
    pub reason: DecisionReason,
    /// When dry-run policies apply: the reason the verdict would have had
    /// were they enforced too. Reported, never enforced.
    pub dry_run: Option<DecisionReason>,
}

impl DecisionReason {
    /// Whether a connection with this reason may proceed.
    pub fn allowed(&self) -> bool {
        matches!(self, DecisionReason::AllowedByPolicy(_) | DecisionReason::NoPolicies)
    }
}

impl Decision {
    /// Whether the connection may proceed.
    pub fn allowed(&self) -> bool {
        self.reason.allowed()
    }

    /// The dry-run verdict, when it differs from the enforced one: what
    /// enforcing the dry-run policies would change.
    pub fn dry_run_change(&self) -> Option<&DecisionReason> {
        self.dry_run.as_ref().filter(|shadow| shadow.allowed() != self.allowed())
    }
}

/// Decides on `conn` given the policies that apply to its destination.
///
/// Any matching DENY denies; otherwise, if any ALLOW policy applies, one
/// must match; otherwise the connection is allowed. Dry-run policies take
/// no part in that verdict; when any apply, the verdict they would give
/// together with the enforced ones is computed as well
/// ([`Decision::dry_run`]).
pub fn evaluate<'a, P>(policies: P, conn: &Connection) -> Decision
where
    P: IntoIterator<Item = &'a Authorization>,
    P::IntoIter: Clone,
{
    let facts = Facts::of(conn);
    let policies = policies.into_iter();
    // Walked again (no copy) only when dry-run policies apply.
    let reason = verdict(policies.clone().filter(|p| !p.dry_run), &facts);
    let dry_run = policies.clone().any(|p| p.dry_run).then(|| verdict(policies, &facts));
    Decision { reason, dry_run }
}

fn verdict<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    facts: &Facts<'_>,
) -> DecisionReason {
    let mut any_allow = false;
    let mut allowed_by = None;
    for policy in policies {
        let matched = policy.rules.iter().position(|rule| rule_matches(rule, facts));
        match (policy.action, matched) {
            (Action::Deny, Some(rule)) => {
                return DecisionReason::DeniedByPolicy(reference(policy, rule));
            }
            (Action::Deny, None) => {}
            (Action::Allow, matched) => {
                any_allow = true;
                if allowed_by.is_none() {
                    allowed_by = matched.map(|rule| reference(policy, rule));
                }
            }
        }
    }
    match (any_allow, allowed_by) {
        (_, Some(by)) => DecisionReason::AllowedByPolicy(by),
        (true, None) => DecisionReason::NoAllowPolicyMatched,
        (false, None) => DecisionReason::NoPolicies,
    }
}

fn reference(policy: &Authorization, rule: usize) -> PolicyRef {
    PolicyRef { namespace: policy.namespace.clone(), name: policy.name.clone(), rule }
}

/// The connection's attributes in the forms policies compare against.
struct Facts<'a> {
    conn: &'a Connection,
    /// `<td>/ns/<ns>/sa/<sa>`: Istio principals omit the scheme.
    principal: Option<String>,
    /// The source namespace; empty without an identity.
    namespace: &'a str,
}

impl<'a> Facts<'a> {
    fn of(conn: &'a Connection) -> Self {
        let principal = conn.source_identity.as_ref().map(|id| {
            format!("{}/ns/{}/sa/{}", id.trust_domain(), id.namespace(), id.service_account())
        });
        let namespace = conn.source_identity.as_ref().map(Identity::namespace).unwrap_or("");
        Self { conn, principal, namespace }
    }
}

/// All clauses must match. A rule without clauses matches everything.
fn rule_matches(rule: &Rule, facts: &Facts<'_>) -> bool {
    rule.clauses.iter().all(|clause| {
        // An empty clause constrains nothing; an empty match matches nothing.
        clause.matches.is_empty()
            || clause.matches.iter().any(|m| !m.is_empty() && match_matches(m, facts))
    })
}

fn match_matches(m: &Match, f: &Facts<'_>) -> bool {
    let principal = |s: &StringMatch| f.principal.as_deref().is_some_and(|p| s.matches(p));
    let namespace = |s: &StringMatch| s.matches(f.namespace);
    let src = |n: &IpNet| n.contains(&f.conn.source_ip);
    let dst = |n: &IpNet| n.contains(&f.conn.destination_ip);
    let port = |p: &u16| *p == f.conn.destination_port;
    field(&m.namespaces, &m.not_namespaces, namespace)
        && field(&m.principals, &m.not_principals, principal)
        && field(&m.source_ips, &m.not_source_ips, src)
        && field(&m.destination_ips, &m.not_destination_ips, dst)
        && field(&m.destination_ports, &m.not_destination_ports, port)
}

/// Positive values: unset or any matches. Negative values: none matches.
fn field<T>(positive: &[T], negative: &[T], test: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&test)) && !negative.iter().any(&test)
}
