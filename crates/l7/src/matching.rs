//! Which route a request takes: the first, in the order the control plane
//! sent, whose conditions all hold. Precedence between routes (Gateway
//! API's rules, VirtualService order) is decided by the control plane; here
//! each condition is only tested.

use http::request::Parts;

use crate::config::{KeyMatch, Match, Route, ServiceRoutes, StringMatch};

/// What a route is matched against.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request's parts.
    pub parts: &'a Parts,
    /// The service port it was sent to.
    pub port: u16,
}

impl RequestFacts<'_> {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    fn query(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parts.uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()).map(
            |pair| {
                // Names and values are compared as sent: Gateway API matches
                // query parameters exactly, without decoding.
                pair.split_once('=').unwrap_or((pair, ""))
            },
        )
    }
}

impl StringMatch {
    /// Whether `s` fits.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            StringMatch::Exact(e) => s == e,
            StringMatch::Prefix(p) => s.starts_with(p.as_str()),
            StringMatch::PathPrefix(p) => path_prefix_matches(p, s),
            StringMatch::Regex(r) => r.is_match(s),
        }
    }
}

/// Gateway API PathPrefix: `/foo` matches `/foo`, `/foo/` and `/foo/bar`,
/// not `/foobar`; `/` (stored as empty) matches everything.
fn path_prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

impl KeyMatch {
    fn holds<'v>(&self, mut values: impl Iterator<Item = &'v str>) -> bool {
        let found = match &self.value {
            None => values.next().is_some(),
            // The first value decides, as Envoy does for repeated keys.
            Some(m) => values.next().is_some_and(|v| m.matches(v)),
        };
        found != self.invert
    }
}

impl Match {
    /// Whether every condition holds.
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        if self.port.is_some_and(|p| p != facts.port) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| *m != facts.parts.method) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| !p.matches(facts.path())) {
            return false;
        }
        let headers = &facts.parts.headers;
        let headers_hold = self.headers.iter().all(|h| {
            h.holds(headers.get_all(h.name.as_str()).iter().filter_map(|v| v.to_str().ok()))
        });
        headers_hold
            && self.query_params.iter().all(|q| {
                q.holds(facts.query().filter(|(name, _)| *name == q.name).map(|(_, value)| value))
            })
    }
}

impl ServiceRoutes {
    /// The route `facts` take, if any.
    pub fn route(&self, facts: &RequestFacts<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.as_ref().is_none_or(|m| m.matches(facts)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn regex(r: &str) -> StringMatch {
        StringMatch::Regex(regex::Regex::new(&format!("^(?:{r})$")).unwrap())
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let m = StringMatch::PathPrefix("/foo".into());
        for (path, expected) in [
            ("/foo", true),
            ("/foo/", true),
            ("/foo/bar", true),
            ("/foobar", false),
            ("/fo", false),
            ("/", false),
        ] {
            assert_eq!(m.matches(path), expected, "{path}");
        }
        assert!(StringMatch::PathPrefix(String::new()).matches("/anything"));
        // A VirtualService prefix is a plain string prefix.
        assert!(StringMatch::Prefix("/foo".into()).matches("/foobar"));
    }

    #[test]
    fn regexes_match_the_whole_path() {
        let m = regex("/v[0-9]+/.*");
        assert!(m.matches("/v2/items"));
        assert!(!m.matches("/api/v2/items"), "anchored at the start");
        assert!(!regex("/v[0-9]").matches("/v2x"), "anchored at the end");
    }

    #[test]
    fn headers_queries_methods_and_ports_all_must_hold() {
        let m = Match {
            path: Some(StringMatch::Exact("/cart".into())),
            headers: vec![KeyMatch {
                name: "x-user".into(),
                value: Some(StringMatch::Exact("jason".into())),
                invert: false,
            }],
            query_params: vec![KeyMatch {
                name: "debug".into(),
                value: Some(StringMatch::Exact("1".into())),
                invert: false,
            }],
            method: Some(http::Method::GET),
            port: Some(80),
        };
        let facts = |uri, h: &[(&str, &str)], port| {
            let p = parts(uri, h);
            m.matches(&RequestFacts { parts: &p, port })
        };
        assert!(facts("/cart?debug=1", &[("x-user", "jason")], 80));
        assert!(
            facts("/cart?a=b&debug=1", &[("X-User", "jason")], 80),
            "header names are case-insensitive"
        );
        assert!(!facts("/cart?debug=1", &[("x-user", "Jason")], 80), "values are exact");
        assert!(!facts("/cart?debug=2", &[("x-user", "jason")], 80));
        assert!(!facts("/cart?debug=1", &[], 80));
        assert!(!facts("/cart?debug=1", &[("x-user", "jason")], 8080));
        assert!(!facts("/cart/?debug=1", &[("x-user", "jason")], 80));
    }

    #[test]
    fn inverted_and_presence_conditions() {
        let without = KeyMatch { name: "x-canary".into(), value: None, invert: true };
        let m = Match { headers: vec![without], ..Default::default() };
        let with = parts("/", &[("x-canary", "yes")]);
        let plain = parts("/", &[]);
        assert!(!m.matches(&RequestFacts { parts: &with, port: 80 }));
        assert!(m.matches(&RequestFacts { parts: &plain, port: 80 }));
    }
}
