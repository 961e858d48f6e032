//! A resumed session never proves more than its full handshake did.
//!
//! For any sequence of handshakes (client certificates, a rotated one
//! among them; servers with their own ticket keys, a rotated one among
//! them; expected identities; server names shared by servers of different
//! identities, the hostile case for a store keyed by name), each handshake
//! succeeds exactly when a full one would, and each side learns exactly the
//! identity a full handshake would prove: the certificate the other side
//! holds now, never one remembered from another server or client.
//!
//! In memory, through rustls and our configurations, as the pool and the
//! server use them: client configurations (and so their session stores)
//! per (certificate, expected identities), server configurations per
//! certificate, and [`check_resumed`] after every handshake. Run briefly
//! inside `cargo test`; `cargo bolero test -p hbone --test resumption_props`
//! drives it for long runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bolero::check;
use hbone::tls::{ServerConfigs, check_resumed, client_config_with_resumption, peer_identity};
use mesh_core::Identity;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use testkit::TestCa;

struct Server {
    identity: Identity,
    tls: Arc<ServerConfig>,
    /// The name it is dialled by: an address of its own, or one name
    /// shared with the others.
    own_name: ServerName<'static>,
}

struct World {
    servers: Vec<Server>,
    /// Two certificates of one identity (a rotation), one of another.
    clients: Vec<hbone::WorkloadCertificate>,
    /// Sets of identities a client may expect.
    expected: Vec<Vec<Identity>>,
}

fn world() -> World {
    let ca = TestCa::new("cluster.local");
    let a = ca.identity("ns-b", "server-a");
    let b = ca.identity("ns-b", "server-b");
    // Two proxies proving A, A again after a rotation, and B. Two pairs
    // share an address, so their sessions compete for one slot.
    let servers = [("10.0.0.1", &a), ("10.0.0.2", &a), ("10.0.0.2", &a), ("10.0.0.1", &b)]
        .into_iter()
        .map(|(ip, identity)| Server {
            identity: identity.clone(),
            tls: ServerConfigs::new(Some(Duration::from_secs(600)))
                .get(&ca.issue(identity), &[])
                .unwrap(),
            own_name: ServerName::IpAddress(ip.parse::<std::net::IpAddr>().unwrap().into()),
        })
        .collect();
    let c = ca.identity("ns-a", "client");
    let clients = vec![ca.issue(&c), ca.issue(&c), ca.issue(&ca.identity("ns-a", "other"))];
    World { servers, clients, expected: vec![vec![a.clone()], vec![b.clone()], vec![a, b]] }
}

/// Moves bytes both ways until neither side has more to say; the first
/// error either side raises ends it.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..16 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let mut rest = &to_server[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).unwrap();
            server.process_new_packets()?;
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).unwrap();
        }
        let mut rest = &to_client[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets()?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
    }
    panic!("the handshake did not settle");
}

/// One step: which client, server, expected set, and whether the server
/// is dialled by the shared name.
type Step = (u8, u8, u8, bool);

/// Client configurations of one pool: one per (certificate, expected set),
/// each with its own session store.
type Configs = HashMap<(usize, usize), Arc<ClientConfig>>;

/// One handshake, checked against what a full one proves; whether it
/// resumed.
fn step(w: &World, configs: &mut Configs, (c, s, e, shared): Step) -> bool {
    let (c, e) = (usize::from(c) % w.clients.len(), usize::from(e) % w.expected.len());
    let server = &w.servers[usize::from(s) % w.servers.len()];
    let client = &w.clients[c];
    let expected = &w.expected[e];
    let config = configs
        .entry((c, e))
        .or_insert_with(|| Arc::new(client_config_with_resumption(client, expected).unwrap()))
        .clone();
    let name = if shared { ServerName::try_from("node").unwrap() } else { server.own_name.clone() };
    let mut tls_client = ClientConnection::new(config, name).unwrap();
    let mut tls_server = ServerConnection::new(server.tls.clone()).unwrap();
    let full_handshake_succeeds = expected.contains(&server.identity);
    let outcome = pump(&mut tls_client, &mut tls_server).and_then(|()| {
        check_resumed(&tls_client, Some(expected))
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        check_resumed(&tls_server, None).map_err(|e| rustls::Error::General(e.to_string()))
    });
    match outcome {
        Ok(_) => {
            assert!(
                full_handshake_succeeds,
                "{:?} accepted expecting {expected:?}",
                server.identity
            );
            let seen_by_client = peer_identity(tls_client.peer_certificates()).unwrap();
            let seen_by_server = peer_identity(tls_server.peer_certificates()).unwrap();
            assert_eq!(seen_by_client, server.identity, "the client proved another server");
            assert_eq!(&seen_by_server, client.identity(), "the server proved another client");
            tls_client.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        }
        Err(e) => {
            assert!(!full_handshake_succeeds, "refused where a full handshake succeeds: {e}");
            false
        }
    }
}

#[test]
fn a_resumed_session_never_proves_more_than_its_full_handshake() {
    // (world, handshakes, resumed); a failed check ends the test, so
    // nothing is observed after an unwind.
    let mut state = std::panic::AssertUnwindSafe((world(), 0usize, 0usize));
    check!().with_iterations(60).with_type::<Vec<Step>>().for_each(|steps| {
        let (world, handshakes, resumed) = &mut *state;
        let mut configs = Configs::new();
        for s in steps.iter().take(12) {
            *resumed += usize::from(step(world, &mut configs, *s));
            *handshakes += 1;
        }
    });
    let (_, handshakes, resumed) = *state;
    // Not vacuous: some handshakes did resume.
    assert!(resumed > 0, "none of {handshakes} handshakes resumed");
    eprintln!("{handshakes} handshakes, {resumed} resumed");
}
