//! `istio.security` protos ↔ policies.

use mesh_proto::security as pb;

use super::{Action, Authorization, Clause, IpNet, Match, PolicyScope, Rule, StringMatch};
use crate::convert::{self, ConvertError};

impl TryFrom<&pb::Authorization> for Authorization {
    type Error = ConvertError;

    fn try_from(p: &pb::Authorization) -> Result<Self, Self::Error> {
        if p.name.is_empty() {
            return Err(ConvertError::Missing("authorization.name"));
        }
        if p.namespace.is_empty() {
            return Err(ConvertError::Missing("authorization.namespace"));
        }
        Ok(Self {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            scope: match convert::enumeration("authorization.scope", p.scope)? {
                pb::Scope::Global => PolicyScope::Global,
                pb::Scope::Namespace => PolicyScope::Namespace,
                pb::Scope::WorkloadSelector => PolicyScope::WorkloadSelector,
            },
            action: match convert::enumeration("authorization.action", p.action)? {
                pb::Action::Allow => Action::Allow,
                pb::Action::Deny => Action::Deny,
            },
            rules: p
                .rules
                .iter()
                .map(|r| {
                    Ok(Rule {
                        clauses: r
                            .clauses
                            .iter()
                            .map(|c| {
                                Ok(Clause {
                                    matches: c.matches.iter().map(match_from).collect::<Result<
                                        _,
                                        ConvertError,
                                    >>(
                                    )?,
                                })
                            })
                            .collect::<Result<_, ConvertError>>()?,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
            dry_run: p.dry_run,
        })
    }
}

fn match_from(p: &pb::Match) -> Result<Match, ConvertError> {
    let strings = |field, v: &[pb::StringMatch]| -> Result<Vec<StringMatch>, ConvertError> {
        v.iter().map(|s| string_match_from(field, s)).collect()
    };
    let nets = |field, v: &[pb::Address]| -> Result<Vec<IpNet>, ConvertError> {
        v.iter().map(|a| ip_net_from(field, a)).collect()
    };
    let ports = |field, v: &[u32]| -> Result<Vec<u16>, ConvertError> {
        v.iter().map(|p| convert::port(field, *p)).collect()
    };
    Ok(Match {
        namespaces: strings("match.namespaces", &p.namespaces)?,
        not_namespaces: strings("match.not_namespaces", &p.not_namespaces)?,
        principals: strings("match.principals", &p.principals)?,
        not_principals: strings("match.not_principals", &p.not_principals)?,
        source_ips: nets("match.source_ips", &p.source_ips)?,
        not_source_ips: nets("match.not_source_ips", &p.not_source_ips)?,
        destination_ips: nets("match.destination_ips", &p.destination_ips)?,
        not_destination_ips: nets("match.not_destination_ips", &p.not_destination_ips)?,
        destination_ports: ports("match.destination_ports", &p.destination_ports)?,
        not_destination_ports: ports("match.not_destination_ports", &p.not_destination_ports)?,
    })
}

fn string_match_from(
    field: &'static str,
    p: &pb::StringMatch,
) -> Result<StringMatch, ConvertError> {
    use pb::string_match::MatchType;
    match &p.match_type {
        Some(MatchType::Exact(s)) => Ok(StringMatch::Exact(s.clone())),
        Some(MatchType::Prefix(s)) => Ok(StringMatch::Prefix(s.clone())),
        Some(MatchType::Suffix(s)) => Ok(StringMatch::Suffix(s.clone())),
        Some(MatchType::Presence(_)) => Ok(StringMatch::Presence),
        None => Err(ConvertError::Missing(field)),
    }
}

fn ip_net_from(field: &'static str, p: &pb::Address) -> Result<IpNet, ConvertError> {
    let address = convert::ip_from_bytes(field, &p.address)?;
    u8::try_from(p.length)
        .ok()
        .and_then(|prefix| IpNet::new(address, prefix))
        .ok_or(ConvertError::BadPrefix { field, address, length: p.length })
}

impl From<&Authorization> for pb::Authorization {
    fn from(d: &Authorization) -> Self {
        Self {
            name: d.name.clone(),
            namespace: d.namespace.clone(),
            scope: match d.scope {
                PolicyScope::Global => pb::Scope::Global,
                PolicyScope::Namespace => pb::Scope::Namespace,
                PolicyScope::WorkloadSelector => pb::Scope::WorkloadSelector,
            } as i32,
            action: match d.action {
                Action::Allow => pb::Action::Allow,
                Action::Deny => pb::Action::Deny,
            } as i32,
            rules: d
                .rules
                .iter()
                .map(|r| pb::Rule {
                    clauses: r
                        .clauses
                        .iter()
                        .map(|c| pb::Clause { matches: c.matches.iter().map(match_to).collect() })
                        .collect(),
                })
                .collect(),
            dry_run: d.dry_run,
        }
    }
}

fn match_to(d: &Match) -> pb::Match {
    let strings = |v: &[StringMatch]| v.iter().map(string_match_to).collect();
    let nets = |v: &[IpNet]| {
        v.iter()
            .map(|n| pb::Address {
                address: convert::ip_to_bytes(&n.address()),
                length: u32::from(n.prefix()),
            })
            .collect()
    };
    let ports = |v: &[u16]| v.iter().map(|p| u32::from(*p)).collect();
    pb::Match {
        namespaces: strings(&d.namespaces),
        not_namespaces: strings(&d.not_namespaces),
        principals: strings(&d.principals),
        not_principals: strings(&d.not_principals),
        source_ips: nets(&d.source_ips),
        not_source_ips: nets(&d.not_source_ips),
        destination_ips: nets(&d.destination_ips),
        not_destination_ips: nets(&d.not_destination_ips),
        destination_ports: ports(&d.destination_ports),
        not_destination_ports: ports(&d.not_destination_ports),
    }
}

fn string_match_to(d: &StringMatch) -> pb::StringMatch {
    use pb::string_match::MatchType;
    pb::StringMatch {
        match_type: Some(match d {
            StringMatch::Exact(s) => MatchType::Exact(s.clone()),
            StringMatch::Prefix(s) => MatchType::Prefix(s.clone()),
            StringMatch::Suffix(s) => MatchType::Suffix(s.clone()),
            StringMatch::Presence => MatchType::Presence(()),
        }),
    }
}
