//! The wire format is a fact of Istio's and Envoy's protocols: these tests
//! pin exact bytes for messages whose field numbers are known, so a changed
//! number in `proto/` fails here before it fails against a real peer.

use prost::Message;

use crate::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use crate::security::{Action, Authorization, Clause, Match, Rule, Scope};
use crate::workload::{Address, TunnelProtocol, Workload, address};
use crate::zds::{KeepWorkload, WorkloadRequest, workload_request};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn workload_fields() {
    let w = Workload {
        uid: "u".into(),
        name: "n".into(),
        addresses: vec![vec![10, 0, 0, 1]],
        tunnel_protocol: TunnelProtocol::Hbone as i32,
        service_account: "sa".into(),
        capacity: Some(5),
        ..Default::default()
    };
    let bytes = Address { r#type: Some(address::Type::Workload(w)) }.encode_to_vec();
    assert_eq!(
        hex(&bytes),
        [
            // Address.workload = 1, 24 bytes; prost writes fields in number order
            "0a 18",
            "0a 01 6e",          // name = 1: "n"
            "1a 04 0a 00 00 01", // addresses = 3: 10.0.0.1
            "28 01",             // tunnel_protocol = 5: HBONE
            "3a 02 73 61",       // service_account = 7: "sa"
            "a2 01 01 75",       // uid = 20: "u"
            "da 01 02 08 05",    // capacity = 27: UInt32Value { value = 1: 5 }
        ]
        .join(" ")
    );
}

#[test]
fn authorization_fields() {
    let policy = Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        scope: Scope::Namespace as i32,
        action: Action::Deny as i32,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match { destination_ports: vec![80], ..Default::default() }],
            }],
        }],
        dry_run: true,
    };
    assert_eq!(
        hex(&policy.encode_to_vec()),
        [
            "0a 01 70",    // name = 1
            "12 02 6e 73", // namespace = 2
            "18 01",       // scope = 3: NAMESPACE
            "20 01",       // action = 4: DENY
            "2a 07",       // rules = 5
            "0a 05",       // Rule.clauses = 1
            "12 03",       // Clause.matches = 2
            "4a 01 50",    // Match.destination_ports = 9, packed: [80]
            "30 01",       // dry_run = 6
        ]
        .join(" ")
    );
}

#[test]
fn delta_discovery_fields() {
    let request = DeltaDiscoveryRequest {
        type_url: "t".into(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: [("a".to_string(), "1".to_string())].into(),
        response_nonce: "n".into(),
        ..Default::default()
    };
    assert_eq!(
        hex(&request.encode_to_vec()),
        [
            "12 01 74",                // type_url = 2
            "1a 01 2a",                // resource_names_subscribe = 3: "*"
            "2a 06 0a 01 61 12 01 31", // initial_resource_versions = 5: {a: 1}
            "32 01 6e",                // response_nonce = 6
        ]
        .join(" ")
    );
    let response = DeltaDiscoveryResponse {
        resources: vec![Resource { version: "v".into(), name: "r".into(), ..Default::default() }],
        type_url: "t".into(),
        nonce: "n".into(),
        removed_resources: vec!["x".into()],
        ..Default::default()
    };
    assert_eq!(
        hex(&response.encode_to_vec()),
        [
            "12 06 0a 01 76 1a 01 72", // resources = 2: Resource { version = 1, name = 3 }
            "22 01 74",                // type_url = 4
            "2a 01 6e",                // nonce = 5
            "32 01 78",                // removed_resources = 6
        ]
        .join(" ")
    );
}

#[test]
fn ca_and_zds_fields() {
    let csr = crate::ca::IstioCertificateRequest {
        csr: "c".into(),
        validity_duration: 3600,
        metadata: None,
    };
    // csr = 1, validity_duration = 3 (varint 3600 = 90 1c).
    assert_eq!(hex(&csr.encode_to_vec()), "0a 01 63 18 90 1c");

    let keep = WorkloadRequest {
        payload: Some(workload_request::Payload::Keep(KeepWorkload { uid: "u".into() })),
    };
    // WorkloadRequest.keep = 5, KeepWorkload.uid = 1.
    assert_eq!(hex(&keep.encode_to_vec()), "2a 03 0a 01 75");
}

#[test]
fn type_urls_name_the_messages() {
    assert_eq!(
        crate::type_url::ADDRESS,
        format!("type.googleapis.com/{}", <Address as prost::Name>::full_name())
    );
    assert_eq!(
        crate::type_url::AUTHORIZATION,
        format!("type.googleapis.com/{}", <Authorization as prost::Name>::full_name())
    );
    assert_eq!(
        crate::type_url::SERVICE_ROUTES,
        format!("type.googleapis.com/{}", <crate::l7::ServiceRoutes as prost::Name>::full_name())
    );
    assert_eq!(
        crate::type_url::L7_AUTHORIZATION,
        format!("type.googleapis.com/{}", <crate::l7::Authorization as prost::Name>::full_name())
    );
    assert_eq!(
        crate::type_url::L7_AUTHENTICATION,
        format!("type.googleapis.com/{}", <crate::l7::Authentication as prost::Name>::full_name())
    );
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics_the_decoders(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = Address::decode(bytes.as_slice());
        let _ = Authorization::decode(bytes.as_slice());
        let _ = DeltaDiscoveryRequest::decode(bytes.as_slice());
        let _ = WorkloadRequest::decode(bytes.as_slice());
        let _ = crate::l7::ServiceRoutes::decode(bytes.as_slice());
    }
}
