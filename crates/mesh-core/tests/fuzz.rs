//! Property/fuzz checks of xDS resources through their domain conversion:
//! any bytes a control plane (or a man in the middle of a plaintext
//! stream) sends decode and convert, or fail with an error; never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bolero::check;
use mesh_proto::istio::{security, workload};
use prost::Message;

#[test]
fn addresses_and_authorizations_from_any_bytes() {
    check!().with_iterations(10_000).for_each(|bytes: &[u8]| {
        if let Ok(address) = workload::Address::decode(bytes)
            && let Ok(domain) = mesh_core::Address::try_from(&address)
        {
            // What converts converts back to something that converts again.
            let back = workload::Address::from(&domain);
            assert!(mesh_core::Address::try_from(&back).is_ok(), "{domain:?}");
        }
        if let Ok(policy) = security::Authorization::decode(bytes) {
            let _ = mesh_core::policy::Authorization::try_from(&policy);
        }
    });
}
