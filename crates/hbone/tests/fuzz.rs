//! Property/fuzz checks of what an HBONE peer controls: the CONNECT's
//! authority and headers. Run briefly inside `cargo test`; for long runs,
//! `cargo bolero test -p hbone --test fuzz <name>` drives the same targets
//! with libFuzzer (docs/hbone.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bolero::check;
use hbone::authority::{parse_authority, parse_forwarded_for};
use hbone::server::parse_connect;
use mesh_core::Identity;

#[test]
fn authorities_and_forwarded_headers_never_panic() {
    check!().with_iterations(5_000).with_type::<String>().for_each(|text| {
        if let Ok(addr) = parse_authority(text) {
            // What parses names a usable address, and prints back to itself.
            assert_eq!(parse_authority(&addr.to_string()).unwrap(), addr, "{text:?}");
        }
        let _ = parse_forwarded_for(text);
    });
}

#[test]
fn connect_requests_never_panic() {
    let peer: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
    let from: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    check!()
        .with_iterations(5_000)
        .with_type::<(Vec<u8>, String, Vec<(String, Vec<u8>)>)>()
        .for_each(|(method, uri, headers)| {
            let mut builder = http::Request::builder();
            if let Ok(m) = http::Method::from_bytes(method) {
                builder = builder.method(m);
            }
            builder = builder.uri(uri.as_str());
            for (name, value) in headers.iter().take(8) {
                builder = builder.header(name.as_str(), value.as_slice());
            }
            let Ok(request) = builder.body(()) else { return };
            if let Ok(connect) = parse_connect(&request, peer.clone(), from) {
                assert_eq!(request.method(), http::Method::CONNECT);
                assert_eq!(connect.peer_addr, from);
            }
        });
}
