//! meshbench's relay floor, checked: what the benchmark reports as the
//! floor under the mesh path must be a working relay on the same hops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use e2e::floor::{NAMESPACE, RelayFloor};
use support::{cluster, echoes, exchange, is_root};

#[test]
fn the_relay_floor_carries_captured_connections_intact() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let (c, state) = cluster("floor", &e2e::floor::pods());
    let client = c.pod(NAMESPACE, "client").unwrap().clone();
    let server = c.pod(NAMESPACE, "server").unwrap().clone();
    let echo = SocketAddr::new(server.ip, 8080);
    support::eventually("the echo answers directly", 10, || echoes(&client.netns, echo));

    let floor =
        RelayFloor::start(Path::new(env!("CARGO_BIN_EXE_meshbench-relay")), &client, &server)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", state.logs()));
    assert_eq!(
        floor.pids().iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
        ["relay-outbound", "relay-inbound"]
    );
    let data: Vec<u8> =
        (0..10_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let back = exchange(&client.netns, echo, &data).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "10 MB intact both ways through both relays");

    // The capture rules stay; without the relays the same connection has
    // nowhere to go, so the bytes above went through them.
    drop(floor);
    assert!(!echoes(&client.netns, echo), "captured connections fail with the relays gone");
}
