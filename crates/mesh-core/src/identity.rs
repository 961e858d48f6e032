//! SPIFFE identities of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The URI scheme every identity carries.
pub const SPIFFE_SCHEME: &str = "spiffe://";

/// Longest trust domain SPIFFE allows.
const MAX_TRUST_DOMAIN: usize = 255;
/// Kubernetes namespaces are DNS-1123 labels.
const MAX_NAMESPACE: usize = 63;
/// Kubernetes service accounts are DNS-1123 subdomains.
const MAX_SERVICE_ACCOUNT: usize = 253;

/// The identity of a workload: its trust domain, namespace and service account.
///
/// Cloning is cheap (three reference-counted strings), because identities key
/// connection pools and travel with every connection.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

/// Why a string is not a valid SPIFFE workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string does not start with `spiffe://`.
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    WrongScheme(String),
    /// One of the three parts is empty.
    #[error("identity has an empty {0}")]
    Empty(Part),
    /// A part holds a character it may not hold.
    #[error("identity {part} {value:?} holds {found:?}, but only {allowed} are allowed")]
    BadCharacter {
        /// Which part.
        part: Part,
        /// The part as given.
        value: String,
        /// The first character that is not allowed.
        found: char,
        /// What is allowed there, in words.
        allowed: &'static str,
    },
    /// A namespace or service account starts or ends with `-` or `.`.
    #[error("identity {part} {value:?} must start and end with a lowercase letter or digit")]
    BadEdge {
        /// Which part.
        part: Part,
        /// The part as given.
        value: String,
    },
    /// A part is longer than allowed.
    #[error("identity {part} is {len} characters long, the limit is {max}")]
    TooLong {
        /// Which part.
        part: Part,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("identity path {0:?} is not \"/ns/<namespace>/sa/<service-account>\"")]
    BadPath(String),
}

/// The three parts of an identity, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The trust domain, e.g. `cluster.local`.
    TrustDomain,
    /// The Kubernetes namespace.
    Namespace,
    /// The Kubernetes service account.
    ServiceAccount,
}

// === impl Part ===

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::TrustDomain => "trust domain",
            Part::Namespace => "namespace",
            Part::ServiceAccount => "service account",
        })
    }
}

// === impl Identity ===

impl Identity {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        validate_trust_domain(trust_domain)?;
        validate_k8s_name(Part::Namespace, namespace, MAX_NAMESPACE, false)?;
        validate_k8s_name(Part::ServiceAccount, service_account, MAX_SERVICE_ACCOUNT, true)?;
        Ok(Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SPIFFE_SCHEME)
            .ok_or_else(|| IdentityError::WrongScheme(s.to_string()))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        let mut segments = path.split('/');
        // `path` starts with '/', so the first segment is always empty.
        let _ = segments.next();
        let parts: Vec<&str> = segments.collect();
        match parts.as_slice() {
            ["ns", namespace, "sa", service_account] => {
                Identity::new(trust_domain, namespace, service_account)
            }
            _ => Err(IdentityError::BadPath(path.to_string())),
        }
    }
}

impl TryFrom<&str> for Identity {
    type Error = IdentityError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// SPIFFE trust domains: lowercase letters, digits, `.`, `-` and `_`.
fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    let part = Part::TrustDomain;
    if td.is_empty() {
        return Err(IdentityError::Empty(part));
    }
    if td.len() > MAX_TRUST_DOMAIN {
        return Err(IdentityError::TooLong { part, len: td.len(), max: MAX_TRUST_DOMAIN });
    }
    if let Some(found) =
        td.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(*c)))
    {
        return Err(IdentityError::BadCharacter {
            part,
            value: td.to_string(),
            found,
            allowed: "lowercase letters, digits, '.', '-' and '_'",
        });
    }
    Ok(())
}

/// Kubernetes object names: DNS-1123 labels (namespaces) or subdomains
/// (service accounts, which may also hold dots).
fn validate_k8s_name(
    part: Part,
    name: &str,
    max: usize,
    dots_allowed: bool,
) -> Result<(), IdentityError> {
    if name.is_empty() {
        return Err(IdentityError::Empty(part));
    }
    if name.len() > max {
        return Err(IdentityError::TooLong { part, len: name.len(), max });
    }
    let allowed_char = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots_allowed && c == '.')
    };
    if let Some(found) = name.chars().find(|c| !allowed_char(*c)) {
        return Err(IdentityError::BadCharacter {
            part,
            value: name.to_string(),
            found,
            allowed: if dots_allowed {
                "lowercase letters, digits, '-' and '.'"
            } else {
                "lowercase letters, digits and '-'"
            },
        });
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err(IdentityError::BadEdge { part, value: name.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
