//! Property/fuzz checks of what the engine's inputs can hold: any bytes as
//! a `mesh.l7.ServiceRoutes` are read or refused with a named field, never
//! a panic; any bytes from a client get an answer or a closed connection
//! within a bounded time, never a panic or a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bolero::check;
use l7::balance::Endpoint;
use l7::clients::Connector;
use l7::metrics::Peer;
use l7::policies::{Applicable, AttachedAuthentication, AttachedPolicy, PolicyIndex};
use l7::{Destinations, Downstream, Engine, EngineSettings, ServiceRoutes, Target};
use mesh_proto::l7 as proto;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[test]
fn any_routes_resource_is_read_or_refused_naming_a_field() {
    check!().with_iterations(20_000).for_each(|bytes: &[u8]| {
        if let Ok(resource) = proto::ServiceRoutes::decode(bytes)
            && let Err(e) = ServiceRoutes::try_from(&resource)
        {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
        }
    });
}

struct Refusing;

impl Connector for Refusing {
    type Io = DuplexStream;

    async fn connect(
        &self,
        _: &Endpoint,
        _: std::net::SocketAddr,
    ) -> std::io::Result<DuplexStream> {
        Err(std::io::Error::other("no upstream here"))
    }
}

struct One;

impl Destinations for One {
    fn routes(&self, _: &str) -> Option<Arc<ServiceRoutes>> {
        None
    }

    fn endpoints(&self, _: &str, _: u16, _: Option<&[String]>) -> Vec<Endpoint> {
        vec![Endpoint { uid: "w".into(), address: "10.0.0.1:80".parse().unwrap() }]
    }

    fn describe(&self, _: &str) -> Peer {
        Peer::default()
    }

    /// A DENY on a path, so that every input that reaches a request goes
    /// through path normalisation and the policy check.
    fn authorization(&self, target: &Target) -> Arc<Applicable> {
        let policy = proto::Authorization {
            namespace: "apps".into(),
            name: "no-admin".into(),
            action: proto::AuthorizationAction::Deny as i32,
            rules: vec![proto::AuthorizationRule {
                to: vec![proto::AuthorizationOperation {
                    paths: vec!["/admin*".into(), "/api/{*}/secret/{**}".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            waypoints: vec!["apps/waypoint".into()],
            ..Default::default()
        };
        let parsed = AttachedPolicy::try_from(&policy).unwrap();
        let index = PolicyIndex::new([&parsed], "apps/waypoint");
        match target {
            Target::Service { key, .. } => index.for_service(key),
            Target::Workload { .. } => index.for_workload(),
        }
    }
}

#[test]
fn any_client_bytes_end_in_an_answer_or_a_close() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = runtime.block_on(async {
        Engine::new(
            Refusing,
            One,
            EngineSettings { header_read_timeout: Duration::from_secs(1), ..Default::default() },
            &mut registry,
        )
    });
    // The engine is shared across inputs (its metrics are behind locks,
    // which a panic would only poison: the check fails either way).
    let engine = std::panic::AssertUnwindSafe(engine);
    let runtime = std::panic::AssertUnwindSafe(runtime);
    check!().with_iterations(2_000).for_each(|bytes: &[u8]| {
        // Whole wrappers, not their fields (closures capture fields apart).
        let (engine, runtime) = (&engine, &runtime);
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let downstream = Downstream {
                source: "10.0.0.9:1".parse().unwrap(),
                peer: Peer::default(),
                target: Target::Service { key: "apps/web".into(), port: 80 },
                destination: "10.0.0.2:80".parse().unwrap(),
            };
            let served = tokio::spawn(engine.0.clone().serve_tunnel(server, downstream));
            let _ = client.write_all(bytes).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            // Paused time: the header timeout and detection wait elapse at
            // once when nothing else can run, so a hang shows as a timeout.
            tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut sink))
                .await
                .expect("the engine answered or closed")
                .ok();
            tokio::time::timeout(Duration::from_secs(60), served)
                .await
                .expect("served to the end")
                .unwrap();
        });
    });
}

/// Policies and JWT rules come from the control plane, tokens from
/// clients: whatever the bytes, reading them ends in a value or an error.
#[test]
fn any_policy_bytes_and_any_token_end_in_a_verdict() {
    check!().with_iterations(2_000).for_each(|bytes: &[u8]| {
        if let Ok(p) = proto::Authorization::decode(bytes) {
            let _ = AttachedPolicy::try_from(&p);
        }
        if let Ok(a) = proto::Authentication::decode(bytes) {
            let _ = AttachedAuthentication::try_from(&a);
        }
    });
    let rule = proto::JwtRule {
        issuer: "https://issuer.example".into(),
        jwks: r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#
            .into(),
        ..Default::default()
    };
    let rules = vec![Arc::new(l7::jwt::JwtRule::new(&rule, "rules[0]").unwrap())];
    check!().with_iterations(5_000).for_each(|bytes: &[u8]| {
        let token = String::from_utf8_lossy(bytes);
        // As a header (when it is a valid header value) and as a parameter.
        if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            let mut parts = http::Request::new(()).into_parts().0;
            parts.headers.insert(http::header::AUTHORIZATION, value);
            let _ = l7::jwt::authenticate(&rules, &mut parts);
        }
        let encoded: String = token
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(uri) = format!("/?access_token={encoded}").parse::<http::Uri>() {
            let mut parts = http::Request::builder().uri(uri).body(()).unwrap().into_parts().0;
            let _ = l7::jwt::authenticate(&rules, &mut parts);
        }
    });
}
