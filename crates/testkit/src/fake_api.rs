//! A small Kubernetes API server for tests: list and watch (with
//! resourceVersions, watch events, bookmarks, `410 Gone` after compaction,
//! label selectors and field selectors on object fields) over the objects a
//! test puts in, on loopback.
//!
//! Only what the control plane's watchers use; not a conformant server. A
//! real cluster (kind) remains the reference.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    /// `pods`, `authorizationpolicies`, ...
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// plural → (namespace, name) → object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    log: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    floor: u64,
    /// plural → how many of its next lists fail with 500.
    failing_lists: BTreeMap<String, u32>,
    /// Status patches received.
    status_patches: usize,
}

/// The fake API server. Cheap to clone.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    addr: SocketAddr,
    /// How long a watch stays open before the server ends it (clients
    /// then re-watch from their last resourceVersion).
    watch_lifetime: Duration,
}

fn plural_of(kind: &str) -> String {
    let lower = kind.to_lowercase();
    // policy → policies, but gateway → gateways.
    let consonant_y =
        lower.ends_with('y') && !lower[..lower.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

impl FakeApiServer {
    /// Starts on `127.0.0.1:0`; watches last `watch_lifetime`.
    pub async fn start(watch_lifetime: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            state: Arc::default(),
            events: broadcast::Sender::new(1024),
            addr: listener.local_addr().unwrap(),
            watch_lifetime,
        };
        let accept = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let server = accept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ =
                        http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig pointing at this server (plain HTTP, no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{}'}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            self.addr
        )
    }

    /// Creates or replaces an object (its `kind` and `metadata` say where).
    pub fn apply(&self, mut object: Value) {
        let kind = object["kind"].as_str().unwrap().to_string();
        let plural = plural_of(&kind);
        let ns = object["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let existed = state
            .objects
            .entry(plural.clone())
            .or_default()
            .insert((ns, name), object.clone())
            .is_some();
        let event = Event { rv, plural, kind: if existed { "MODIFIED" } else { "ADDED" }, object };
        state.log.push(event.clone());
        drop(state);
        let _ = self.events.send(event);
    }

    /// Deletes an object.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let plural = plural_of(kind);
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state
            .objects
            .get_mut(&plural)
            .and_then(|m| m.remove(&(namespace.to_string(), name.to_string())))
        else {
            return;
        };
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event { rv, plural, kind: "DELETED", object };
        state.log.push(event.clone());
        drop(state);
        let _ = self.events.send(event);
    }

    /// An object, by plural resource name (`pods`, `secrets`...).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state.objects.get(plural)?.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Makes the next `count` lists of `kind` fail with `500` (a watch's
    /// first list failing, as during an API server's restart).
    pub fn fail_lists(&self, kind: &str, count: u32) {
        self.state.lock().unwrap().failing_lists.insert(plural_of(kind), count);
    }

    /// Status patches received so far.
    pub fn status_patches(&self) -> usize {
        self.state.lock().unwrap().status_patches
    }

    /// Forgets history: watches resuming from before now get `410 Gone`.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.floor = state.rv;
        state.log.clear();
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        // A status subresource (`.../<name>/status`): a merge patch of the
        // object's `status`, as controllers write it.
        if req.method() == http::Method::PATCH {
            let Some(object_path) = path.strip_suffix("/status") else {
                return json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    status(405, "MethodNotAllowed", &path),
                );
            };
            let Some(Route { namespace, plural, name: Some(name) }) = Route::parse(object_path)
            else {
                return json_response(StatusCode::NOT_FOUND, status(404, "NotFound", &path));
            };
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    status(400, "BadRequest", "invalid JSON"),
                );
            };
            let key = (namespace.unwrap_or_default(), name.clone());
            let current =
                self.state.lock().unwrap().objects.get(&plural).and_then(|m| m.get(&key)).cloned();
            let Some(mut object) = current else {
                return json_response(StatusCode::NOT_FOUND, status(404, "NotFound", &name));
            };
            object["status"] = patch["status"].clone();
            self.state.lock().unwrap().status_patches += 1;
            self.apply(object.clone());
            return json_response(StatusCode::OK, object);
        }
        let route = Route::parse(&path);
        if req.method() == http::Method::POST {
            let Some(Route { namespace, plural, name: None }) = route else {
                return json_response(StatusCode::NOT_FOUND, status(404, "NotFound", &path));
            };
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    status(400, "BadRequest", "invalid JSON"),
                );
            };
            if let Some(ns) = namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let exists = self
                .state
                .lock()
                .unwrap()
                .objects
                .get(&plural)
                .is_some_and(|m| m.contains_key(&(ns, name.clone())));
            if exists {
                return json_response(StatusCode::CONFLICT, status(409, "AlreadyExists", &name));
            }
            self.apply(object.clone());
            return json_response(StatusCode::CREATED, object);
        }
        if let Some(Route { namespace, plural, name: Some(name) }) = &route {
            let state = self.state.lock().unwrap();
            let key = (namespace.clone().unwrap_or_default(), name.clone());
            return match state.objects.get(plural).and_then(|m| m.get(&key)) {
                Some(object) => json_response(StatusCode::OK, object.clone()),
                None => json_response(StatusCode::NOT_FOUND, status(404, "NotFound", name)),
            };
        }
        let namespace_filter = route.as_ref().and_then(|r| r.namespace.clone());
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let Some(plural) = route.map(|r| r.plural) else {
            return json_response(StatusCode::NOT_FOUND, status(404, "NotFound", &path));
        };
        if query.get("watch").is_none_or(|w| w != "true" && w != "1") {
            let mut state = self.state.lock().unwrap();
            if let Some(left) = state.failing_lists.get_mut(&plural).filter(|n| **n > 0) {
                *left -= 1;
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    status(500, "InternalError", "injected list failure"),
                );
            }
        }
        // `k=v,k=v` selectors: labels, and fields as `a.b=value` paths.
        let pairs = |key: &str| -> Vec<(String, String)> {
            query.get(key).map_or_else(Vec::new, |s| {
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect()
            })
        };
        let (selector, fields) = (pairs("labelSelector"), pairs("fieldSelector"));
        let matches = move |o: &Value| {
            namespace_filter.as_deref().is_none_or(|ns| o["metadata"]["namespace"] == ns)
                && selector
                    .iter()
                    .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v.as_str()))
                && fields.iter().all(|(path, v)| {
                    let field = path.split('.').fold(o, |at, part| &at[part]);
                    field.as_str() == Some(v.as_str())
                })
        };
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        if !watch {
            let state = self.state.lock().unwrap();
            let items: Vec<Value> = state
                .objects
                .get(&plural)
                .map(|m| m.values().filter(|o| matches(o)).cloned().collect())
                .unwrap_or_default();
            return json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List",
                       "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
            );
        }
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).unwrap();
            b.push(b'\n');
            Bytes::from(b)
        };
        let mut live = self.events.subscribe();
        let (backlog, gone, current) = {
            let state = self.state.lock().unwrap();
            let gone = since < state.floor;
            let backlog: Vec<Event> =
                state.log.iter().filter(|e| e.rv > since && e.plural == plural).cloned().collect();
            (backlog, gone, state.rv)
        };
        let lifetime = self.watch_lifetime;
        tokio::spawn(async move {
            if gone {
                let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {since}")}});
                let _ = tx.send(line(status)).await;
                return;
            }
            let mut last = since.max(current);
            for e in backlog.into_iter().filter(|e| matches(&e.object)) {
                last = last.max(e.rv);
                if tx.send(line(json!({"type": e.kind, "object": e.object}))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(lifetime);
            tokio::pin!(deadline);
            let mut bookmarks = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = bookmarks.tick() => {
                        let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark",
                            "apiVersion": "v1", "metadata": {"resourceVersion": last.to_string()}}});
                        if tx.send(line(bookmark)).await.is_err() { return; }
                    }
                    event = live.recv() => match event {
                        Ok(e) if e.plural == plural && e.rv > last && matches(&e.object) => {
                            last = e.rv;
                            if tx.send(line(json!({"type": e.kind, "object": e.object}))).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                }
            }
        });
        let body =
            StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
        let mut response = Response::new(BodyExt::boxed(body));
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response
    }
}

/// What a path names: `/api/v1[/namespaces/<ns>]/<plural>[/<name>]` or
/// `/apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>]`.
struct Route {
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segments.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return None,
        };
        let owned = |s: &&str| s.to_string();
        match rest {
            [plural] => Some(Self { namespace: None, plural: owned(plural), name: None }),
            [plural, name] => {
                Some(Self { namespace: None, plural: owned(plural), name: Some(owned(name)) })
            }
            ["namespaces", ns, plural] => {
                Some(Self { namespace: Some(owned(ns)), plural: owned(plural), name: None })
            }
            ["namespaces", ns, plural, name] => Some(Self {
                namespace: Some(owned(ns)),
                plural: owned(plural),
                name: Some(owned(name)),
            }),
            _ => None,
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

fn json_response(status: StatusCode, body: Value) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
