//! The key sets RequestAuthentications name by `jwksUri`, fetched by the
//! control plane and inlined into what waypoints are sent (as istiod
//! does), so a waypoint never reaches out to an issuer itself.
//!
//! Each URI is fetched when it first appears, then every
//! [`JwksSettings::refresh`]. A fetch that fails (no answer within the
//! timeout, a status other than 200, more than [`MAX_BODY`] bytes, or a
//! body that is not a key set with keys) keeps the last keys fetched and
//! records why, which the model reports on the RequestAuthentication; it is
//! retried every [`JwksSettings::retry`]. A URI no longer named is
//! forgotten.
//!
//! HTTP/1.1 over TCP for `http://`, over TLS with the system's roots for
//! `https://`, with hyper's client connection: one request per connection,
//! nothing pooled (a fetch every twenty minutes per issuer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::model::policies::authn::{Fetched, Jwks};

/// Largest key set read.
pub const MAX_BODY: usize = 1024 * 1024;

/// How often and how patiently.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// A fetched set is fetched again after this (Istio: 20 minutes).
    pub refresh: Duration,
    /// A failed fetch is tried again after this.
    pub retry: Duration,
    /// One fetch, connection to last byte.
    pub timeout: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(20 * 60),
            retry: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Starts the fetcher: send it the URIs wanted; read the key sets.
pub fn spawn(
    settings: JwksSettings,
) -> (watch::Sender<BTreeSet<String>>, watch::Receiver<Arc<Jwks>>) {
    let (wanted_tx, wanted_rx) = watch::channel(BTreeSet::new());
    let (keys_tx, keys_rx) = watch::channel(Arc::new(Jwks::new()));
    tokio::spawn(run(settings, wanted_rx, keys_tx));
    (wanted_tx, keys_rx)
}

async fn run(
    settings: JwksSettings,
    mut wanted: watch::Receiver<BTreeSet<String>>,
    keys: watch::Sender<Arc<Jwks>>,
) {
    let mut known: BTreeMap<String, (Fetched, Instant)> = BTreeMap::new();
    loop {
        let uris = wanted.borrow_and_update().clone();
        known.retain(|uri, _| uris.contains(uri));
        for uri in &uris {
            known.entry(uri.clone()).or_insert_with(|| (Fetched::default(), Instant::now()));
        }
        let now = Instant::now();
        let mut changed = false;
        for (uri, (fetched, due)) in known.iter_mut().filter(|(_, (_, due))| *due <= now) {
            let before = fetched.clone();
            match tokio::time::timeout(settings.timeout, fetch(uri)).await {
                Ok(Ok(body)) => {
                    if fetched.keys.as_deref() != Some(body.as_str()) {
                        info!(%uri, "JWKS fetched");
                    }
                    *fetched = Fetched { keys: Some(body), error: None };
                    *due = Instant::now() + settings.refresh;
                }
                Ok(Err(e)) => {
                    warn!(%uri, error = %e, "JWKS fetch failed; the last keys stay");
                    fetched.error = Some(e);
                    *due = Instant::now() + settings.retry;
                }
                Err(_) => {
                    let e = format!("no answer within {:?}", settings.timeout);
                    warn!(%uri, error = %e, "JWKS fetch failed; the last keys stay");
                    fetched.error = Some(e);
                    *due = Instant::now() + settings.retry;
                }
            }
            changed |= *fetched != before;
        }
        let current: Jwks = known.iter().map(|(u, (f, _))| (u.clone(), f.clone())).collect();
        if changed || **keys.borrow() != current {
            keys.send_replace(Arc::new(current));
        }
        let next = known.values().map(|(_, due)| *due).min();
        tokio::select! {
            r = wanted.changed() => if r.is_err() { return },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// One GET; the body when it is a key set.
pub async fn fetch(uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("not a URI: {e}"))?;
    let https = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let host = parsed.host().ok_or("no host")?.to_string();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let path = parsed.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = http::Request::get(path)
        .header(http::header::HOST, parsed.authority().map_or(host.as_str(), |a| a.as_str()))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if https {
        let tls = tls_config()?;
        let name =
            rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        send(stream, request).await?
    } else {
        send(tcp, request).await?
    };
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("answered {}", parts.status));
    }
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| "the body is not UTF-8".to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("keys").and_then(|k| k.as_array()).is_none_or(|k| k.is_empty()) {
        return Err("not a JSON Web Key Set with keys".into());
    }
    Ok(text)
}

async fn send<S>(
    io: S,
    request: http::Request<Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))
}

/// TLS with the system's roots, loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system root certificates to check the issuer's".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEYS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#;

    /// A server answering each connection with the next of `answers`
    /// (status, body), the last one forever.
    async fn server(answers: Vec<(u16, String)>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answers[n.min(answers.len() - 1)].clone();
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}/jwks.json"), served)
    }

    #[tokio::test]
    async fn fetches_key_sets_and_refuses_what_is_not_one() {
        let (uri, _) = server(vec![(200, KEYS.into())]).await;
        assert_eq!(fetch(&uri).await.unwrap(), KEYS);
        let (uri, _) = server(vec![(404, "gone".into())]).await;
        assert!(fetch(&uri).await.unwrap_err().contains("404"));
        let (uri, _) = server(vec![(200, "{\"keys\": []}".into())]).await;
        assert!(fetch(&uri).await.unwrap_err().contains("Key Set"));
        let (uri, _) = server(vec![(200, "x".repeat(MAX_BODY + 1))]).await;
        assert!(fetch(&uri).await.unwrap_err().contains("body"));
        assert!(fetch("ftp://example/x").await.unwrap_err().contains("scheme"));
        assert!(fetch("http://127.0.0.1:1/x").await.unwrap_err().contains("connecting"));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_keys_and_says_why() {
        let (uri, served) = server(vec![(200, KEYS.into()), (500, "down".into())]).await;
        let settings = JwksSettings {
            refresh: Duration::from_millis(50),
            retry: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        };
        let (wanted, mut keys) = spawn(settings);
        wanted.send_replace([uri.clone()].into());
        let fetched = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                keys.changed().await.unwrap();
                let current = keys.borrow().get(&uri).cloned().unwrap_or_default();
                if current.error.is_some() {
                    return current;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(fetched.keys.as_deref(), Some(KEYS), "the last good keys stay");
        assert!(fetched.error.unwrap().contains("500"));
        assert!(served.load(Ordering::SeqCst) >= 2);
        // No longer wanted: forgotten.
        wanted.send_replace(BTreeSet::new());
        tokio::time::timeout(Duration::from_secs(10), async {
            while !keys.borrow().is_empty() {
                keys.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
    }
}
