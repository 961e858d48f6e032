//! Parsing what a CONNECT request carries: the `:authority` target and the
//! `Forwarded` header.
//!
//! Hand-written because both grammars we accept are tiny subsets: HBONE
//! authorities are always `<ip>:<port>` (never host names), and of RFC 7239
//! we need only the first `for=` parameter.

use std::net::{IpAddr, SocketAddr};

/// Why a CONNECT target or header was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The method was not CONNECT.
    #[error("method {0} is not CONNECT")]
    NotConnect(String),
    /// The authority is not `<ip>:<port>`.
    #[error("authority {0:?} is not <ip>:<port>")]
    BadAuthority(String),
    /// The authority's port is 0.
    #[error("authority {0:?} has port 0")]
    PortZero(String),
    /// The request has no authority.
    #[error("request has no :authority")]
    MissingAuthority,
    /// A header's value is not valid.
    #[error("header {name} has an invalid value: {why}")]
    BadHeader {
        /// The header's name.
        name: &'static str,
        /// What was wrong.
        why: String,
    },
}

/// The client named in a `Forwarded: for=...` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedFor {
    /// The original client's address.
    pub ip: IpAddr,
    /// Its port, when given.
    pub port: Option<u16>,
}

/// Parses an HBONE CONNECT authority: `1.2.3.4:80` or `[2001:db8::1]:80`.
pub fn parse_authority(authority: &str) -> Result<SocketAddr, RequestError> {
    let addr: SocketAddr =
        authority.parse().map_err(|_| RequestError::BadAuthority(authority.to_string()))?;
    if addr.port() == 0 {
        return Err(RequestError::PortZero(authority.to_string()));
    }
    Ok(addr)
}

/// Formats the authority for a target (`[v6]:port` for IPv6).
pub fn format_authority(target: SocketAddr) -> String {
    target.to_string()
}

/// Formats a `Forwarded` header value naming the original client.
pub fn format_forwarded(src: SocketAddr) -> String {
    format!("for=\"{src}\"")
}

/// Reads the first `for=` parameter of a `Forwarded` header value.
///
/// Accepts `for=1.2.3.4`, `for="1.2.3.4:5"`, `for="[2001:db8::1]:5"` and
/// `for="[2001:db8::1]"`, with other parameters and elements around it.
/// Returns `Ok(None)` when no `for=` is present, and an error when one is
/// present but is not an address (obfuscated identifiers such as `_hidden`
/// and `unknown` are not addresses HBONE can use).
pub fn parse_forwarded_for(value: &str) -> Result<Option<ForwardedFor>, RequestError> {
    let bad = |why: String| RequestError::BadHeader { name: "forwarded", why };
    for element in value.split(',') {
        for pair in element.split(';') {
            let Some((key, raw)) = pair.trim().split_once('=') else {
                continue;
            };
            if !key.trim().eq_ignore_ascii_case("for") {
                continue;
            }
            let raw = raw.trim();
            let node = match raw.strip_prefix('"') {
                Some(rest) => rest
                    .strip_suffix('"')
                    .ok_or_else(|| bad(format!("unterminated quote in {raw:?}")))?,
                None => raw,
            };
            return parse_node(node)
                .map(Some)
                .ok_or_else(|| bad(format!("{node:?} is not an address")));
        }
    }
    Ok(None)
}

fn parse_node(node: &str) -> Option<ForwardedFor> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(ForwardedFor { ip: addr.ip(), port: Some(addr.port()) });
    }
    let bare = node.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(node);
    bare.parse::<IpAddr>().ok().map(|ip| ForwardedFor { ip, port: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn authorities() {
        assert_eq!(parse_authority("10.0.0.1:80").unwrap(), "10.0.0.1:80".parse().unwrap());
        assert_eq!(parse_authority("[fd00::1]:8080").unwrap().port(), 8080);
        for bad in ["", "10.0.0.1", "10.0.0.1:", "host:80", "fd00::1:80", "10.0.0.1:99999", "[::1]"]
        {
            assert!(matches!(parse_authority(bad), Err(RequestError::BadAuthority(_))), "{bad}");
        }
        assert!(matches!(parse_authority("10.0.0.1:0"), Err(RequestError::PortZero(_))));
    }

    #[test]
    fn forwarded() {
        let v4 = ForwardedFor { ip: "10.0.0.1".parse().unwrap(), port: Some(5) };
        assert_eq!(parse_forwarded_for("for=\"10.0.0.1:5\"").unwrap(), Some(v4));
        assert_eq!(
            parse_forwarded_for("proto=http;For=\"10.0.0.1:5\", for=1.1.1.1").unwrap(),
            Some(v4)
        );
        assert_eq!(
            parse_forwarded_for("for=10.0.0.1").unwrap(),
            Some(ForwardedFor { ip: v4.ip, port: None })
        );
        assert_eq!(parse_forwarded_for("for=\"[fd00::1]\"").unwrap().unwrap().port, None);
        assert_eq!(parse_forwarded_for("by=10.0.0.1").unwrap(), None);
        for bad in ["for=\"10.0.0.1:5", "for=_hidden", "for=unknown", "for=\"host:80\""] {
            assert!(parse_forwarded_for(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn authority_round_trips(addr in any::<SocketAddr>().prop_filter("port 0", |a| a.port() != 0)) {
            // Scope ids and flow info are not part of an authority.
            let addr = SocketAddr::new(addr.ip(), addr.port());
            prop_assert_eq!(parse_authority(&format_authority(addr)).unwrap(), addr);
        }

        #[test]
        fn forwarded_round_trips(addr in any::<SocketAddr>()) {
            let addr = SocketAddr::new(addr.ip(), addr.port());
            let parsed = parse_forwarded_for(&format_forwarded(addr)).unwrap().unwrap();
            prop_assert_eq!(parsed, ForwardedFor { ip: addr.ip(), port: Some(addr.port()) });
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,64}") {
            let _ = parse_authority(&s);
            let _ = parse_forwarded_for(&s);
        }

        #[test]
        fn forwarded_like_garbage_never_panics(s in "(for|For|by|proto)=\"?[0-9a-f:.\\[\\]_ ;,\"]{0,40}") {
            let _ = parse_forwarded_for(&s);
        }
    }
}
