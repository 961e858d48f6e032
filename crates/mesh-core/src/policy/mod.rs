//! L4 authorization policies and their evaluation.
//!
//! Semantics follow Istio: a policy matches when any of its rules does; a
//! rule when all its clauses do; a clause when any of its matches does; a
//! match when every field it sets does (values within a field are OR-ed,
//! `not_*` fields match when none of their values do).

mod convert;
mod evaluate;
pub mod http;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use evaluate::{Connection, Decision, DecisionReason, PolicyRef, evaluate};

/// One `istio.security.Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Which workloads it applies to.
    pub scope: PolicyScope,
    /// What a match means.
    pub action: Action,
    /// OR-ed.
    pub rules: Vec<Rule>,
    /// `istio.io/dry-run`: evaluated and reported, never enforced.
    pub dry_run: bool,
}

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyScope {
    /// Every workload (policies in the root namespace).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Workloads that list the policy by name.
    WorkloadSelector,
}

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Allow (and deny whatever no ALLOW policy matches).
    Allow,
    /// Deny.
    Deny,
}

/// AND-ed clauses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// All must match.
    pub clauses: Vec<Clause>,
}

/// OR-ed matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clause {
    /// Any must match.
    pub matches: Vec<Match>,
}

/// Conditions on one connection. Unset fields do not constrain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    /// Source namespace is one of these.
    pub namespaces: Vec<StringMatch>,
    /// Source namespace is none of these.
    pub not_namespaces: Vec<StringMatch>,
    /// Source principal (`<td>/ns/<ns>/sa/<sa>`) is one of these.
    pub principals: Vec<StringMatch>,
    /// Source principal is none of these.
    pub not_principals: Vec<StringMatch>,
    /// Source IP is in one of these blocks.
    pub source_ips: Vec<IpNet>,
    /// Source IP is in none of these blocks.
    pub not_source_ips: Vec<IpNet>,
    /// Destination IP is in one of these blocks.
    pub destination_ips: Vec<IpNet>,
    /// Destination IP is in none of these blocks.
    pub not_destination_ips: Vec<IpNet>,
    /// Destination port is one of these.
    pub destination_ports: Vec<u16>,
    /// Destination port is none of these.
    pub not_destination_ports: Vec<u16>,
}

/// How a string is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Present and non-empty (`*`).
    Presence,
}

/// An IP block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

// === impl Authorization ===

impl Authorization {
    /// The xDS resource name: `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

// === impl Match ===

impl Match {
    /// True when no field is set. Istio skips such matches: they match nothing.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }
}

// === impl StringMatch ===

impl StringMatch {
    /// Istio's string patterns: `*` (present), `prefix*`, `*suffix`, or
    /// exact.
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            StringMatch::Presence
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            StringMatch::Suffix(suffix.to_string())
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            StringMatch::Prefix(prefix.to_string())
        } else {
            StringMatch::Exact(pattern.to_string())
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

// === impl IpNet ===

impl IpNet {
    /// `10.0.0.0/8`, `fd00::/8`, or one address; `None` when it is none of
    /// those.
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once('/') {
            Some((ip, len)) => Self::new(ip.parse().ok()?, len.parse().ok()?),
            None => {
                let ip: IpAddr = s.parse().ok()?;
                Self::new(ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        }
    }

    /// A block; `None` when the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { address, prefix })
    }

    /// The address as given (host bits are kept, and ignored by `contains`).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block. Never across address families.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}
