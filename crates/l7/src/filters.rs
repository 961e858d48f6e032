//! What a route does to a request and its answer before and after it is
//! forwarded: header edits, path and authority rewrites, redirects. Pure
//! functions over `http` types.

use http::header::{HOST, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};

use crate::config::{HeaderEdits, PathRewrite, Redirect, Rewrite, Route, StringMatch};

impl HeaderEdits {
    /// Applies the edits: set, then add, then remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// The prefix the route matched, for prefix rewrites: only prefix matches
/// have one.
fn matched_prefix(route: &Route) -> Option<&str> {
    match route.matcher.as_ref()?.path.as_ref()? {
        StringMatch::Prefix(p) | StringMatch::PathPrefix(p) => Some(p),
        _ => None,
    }
}

/// The path after `rewrite`, or `None` when it is unchanged.
fn rewritten_path(route: &Route, path: &str, rewrite: &PathRewrite) -> String {
    match (rewrite, matched_prefix(route)) {
        (PathRewrite::Full(full), _) => full.clone(),
        (PathRewrite::Prefix(new), Some(old)) => {
            let rest = path.strip_prefix(old).unwrap_or(path);
            match matches!(
                route.matcher.as_ref().and_then(|m| m.path.as_ref()),
                Some(StringMatch::PathPrefix(_))
            ) {
                // Gateway API: whole segments; never a doubled or missing slash.
                true => {
                    let new = new.trim_end_matches('/');
                    match (new.is_empty(), rest.is_empty()) {
                        (true, true) => "/".to_string(),
                        (true, false) => rest.to_string(),
                        (false, _) => format!("{new}{rest}"),
                    }
                }
                // VirtualService: the matched characters are replaced as they are.
                false => format!("{new}{rest}"),
            }
        }
        // A prefix rewrite without a prefix match replaces the whole path.
        (PathRewrite::Prefix(new), None) => {
            if new.is_empty() {
                "/".into()
            } else {
                new.clone()
            }
        }
    }
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Applies a forward's rewrite to the request's URI and headers. False when
/// the result is not a valid request (the caller answers 500).
pub fn apply_rewrite(route: &Route, rewrite: &Rewrite, parts: &mut http::request::Parts) -> bool {
    if let Some(path) = &rewrite.path {
        let new = rewritten_path(route, parts.uri.path(), path);
        match with_path(&parts.uri, &new) {
            Some(uri) => parts.uri = uri,
            None => return false,
        }
    }
    if let Some(authority) = &rewrite.authority {
        let Ok(value) = HeaderValue::from_str(authority) else { return false };
        parts.headers.insert(HOST, value);
        if parts.uri.authority().is_some() {
            let mut uri = parts.uri.clone().into_parts();
            match Authority::try_from(authority.as_str()) {
                Ok(a) => uri.authority = Some(a),
                Err(_) => return false,
            }
            match Uri::from_parts(uri) {
                Ok(u) => parts.uri = u,
                Err(_) => return false,
            }
        }
    }
    true
}

/// The host a request was sent to (`:authority` or `Host`), without the port.
pub fn request_host(parts: &http::request::Parts) -> Option<(String, Option<u16>)> {
    let authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => Authority::try_from(parts.headers.get(HOST)?.to_str().ok()?).ok()?,
    };
    Some((authority.host().to_string(), authority.port_u16()))
}

/// The redirect answer for a request.
pub fn redirect<B: Default>(
    route: &Route,
    redirect: &Redirect,
    parts: &http::request::Parts,
) -> Response<B> {
    let scheme = redirect
        .scheme
        .clone()
        .unwrap_or_else(|| parts.uri.scheme_str().unwrap_or("http").to_string());
    let (original_host, original_port) = request_host(parts).unwrap_or_default();
    let host = redirect.host.clone().unwrap_or(original_host);
    let port = match (redirect.port, &redirect.scheme) {
        (Some(p), _) => Some(p),
        // A new scheme brings its own well-known port.
        (None, Some(_)) => None,
        (None, None) => original_port,
    };
    let well_known = matches!((scheme.as_str(), port), ("http", Some(80)) | ("https", Some(443)));
    let port = port.filter(|_| !well_known).map(|p| format!(":{p}")).unwrap_or_default();
    let path = match &redirect.path {
        Some(rw) => rewritten_path(route, parts.uri.path(), rw),
        None => parts.uri.path().to_string(),
    };
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("{scheme}://{host}{port}{path}{query}");
    let mut response = Response::new(B::default());
    *response.status_mut() = redirect.status;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            response.headers_mut().insert(LOCATION, v);
        }
        Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{Action, Fault, Match};

    fn route(path: Option<StringMatch>) -> Route {
        Route {
            name: "r".into(),
            matcher: Some(Match { path, ..Default::default() }),
            action: Action::Direct { status: StatusCode::OK, body: String::new() },
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            fault: Fault::default(),
            mirrors: vec![],
        }
    }

    fn parts(uri: &str, host: &str) -> http::request::Parts {
        http::Request::builder().uri(uri).header(HOST, host).body(()).unwrap().into_parts().0
    }

    #[test]
    fn gateway_prefix_rewrites_keep_one_slash() {
        let r = route(Some(StringMatch::PathPrefix("/foo".into())));
        let rw = |new: &str, path: &str| rewritten_path(&r, path, &PathRewrite::Prefix(new.into()));
        assert_eq!(rw("/bar", "/foo/baz"), "/bar/baz");
        assert_eq!(rw("/bar/", "/foo/baz"), "/bar/baz");
        assert_eq!(rw("/", "/foo/baz"), "/baz");
        assert_eq!(rw("/", "/foo"), "/");
        assert_eq!(rw("/bar", "/foo"), "/bar");
    }

    #[test]
    fn virtual_service_prefix_rewrites_replace_the_matched_characters() {
        let r = route(Some(StringMatch::Prefix("/foo".into())));
        assert_eq!(rewritten_path(&r, "/foobaz", &PathRewrite::Prefix("/bar".into())), "/barbaz");
        let exact = route(Some(StringMatch::Exact("/foo".into())));
        assert_eq!(rewritten_path(&exact, "/foo", &PathRewrite::Prefix("/bar".into())), "/bar");
    }

    #[test]
    fn rewrites_keep_the_query_and_set_the_host() {
        let r = route(Some(StringMatch::PathPrefix("/api".into())));
        let mut p = parts("/api/items?page=2", "shop");
        let rewrite = Rewrite {
            authority: Some("backend.apps".into()),
            path: Some(PathRewrite::Prefix("/v2".into())),
        };
        assert!(apply_rewrite(&r, &rewrite, &mut p));
        assert_eq!(p.uri, "/v2/items?page=2");
        assert_eq!(p.headers[HOST], "backend.apps");
    }

    #[test]
    fn header_edits_set_add_then_remove() {
        let edits = HeaderEdits {
            set: vec![("x-a".parse().unwrap(), HeaderValue::from_static("1"))],
            add: vec![("x-b".parse().unwrap(), HeaderValue::from_static("2"))],
            remove: vec!["x-c".parse().unwrap()],
        };
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("old"));
        h.append("x-a", HeaderValue::from_static("older"));
        h.append("x-b", HeaderValue::from_static("kept"));
        h.append("x-c", HeaderValue::from_static("gone"));
        edits.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1"]);
        assert_eq!(h.get_all("x-b").iter().collect::<Vec<_>>(), ["kept", "2"]);
        assert!(!h.contains_key("x-c"));
    }

    #[test]
    fn redirects_build_the_location() {
        let r = route(Some(StringMatch::PathPrefix("/old".into())));
        let p = parts("/old/page?x=1", "shop:8080");
        let rd = |scheme: Option<&str>, host: Option<&str>, port, path| Redirect {
            scheme: scheme.map(Into::into),
            host: host.map(Into::into),
            port,
            path,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let location = |redirect: &Redirect| {
            let resp: Response<()> = super::redirect(&r, redirect, &p);
            assert_eq!(resp.status(), 301);
            resp.headers()[LOCATION].to_str().unwrap().to_string()
        };
        assert_eq!(location(&rd(None, None, None, None)), "http://shop:8080/old/page?x=1");
        assert_eq!(
            location(&rd(
                Some("https"),
                Some("www.example.com"),
                None,
                Some(PathRewrite::Prefix("/new".into()))
            )),
            "https://www.example.com/new/page?x=1"
        );
        assert_eq!(
            location(&rd(None, None, Some(80), Some(PathRewrite::Full("/x".into())))),
            "http://shop/x?x=1"
        );
    }
}
