#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use mesh_core::Address;
use testkit::model::service;

use super::*;

fn store() -> Arc<WorkloadStore> {
    let store = WorkloadStore::new();
    store.insert(Address::Service(Box::new(
        service("web", "apps", "10.96.0.10".parse().unwrap(), &[(80, 8080)]).build(),
    )));
    store
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x1234;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m.to_vec().unwrap()
}

fn reply(answer: Answer) -> Message {
    match answer {
        Answer::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ips(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn service_names_and_their_short_forms_resolve_to_the_vip() {
    let st = store();
    for name in [
        "web.apps.svc.cluster.local.",
        "WEB.apps.svc.cluster.local.",
        "web.apps.svc.",
        "web.apps.",
        "web.",
    ] {
        let m = reply(answer(&st, "apps", "cluster.local", &query(name, RecordType::A)));
        assert_eq!(m.metadata.id, 0x1234, "{name}");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(ips(&m), ["10.96.0.10"], "{name}");
    }
    // From another namespace, the bare name means another service.
    assert_eq!(
        answer(&st, "other", "cluster.local", &query("web.", RecordType::A)),
        Answer::Forward
    );
}

#[test]
fn aaaa_for_a_v4_service_is_an_empty_answer_not_a_forward() {
    let m = reply(answer(
        &store(),
        "apps",
        "cluster.local",
        &query("web.apps.svc.cluster.local.", RecordType::AAAA),
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn other_names_and_types_are_forwarded() {
    let st = store();
    assert_eq!(
        answer(&st, "apps", "cluster.local", &query("example.com.", RecordType::A)),
        Answer::Forward
    );
    assert_eq!(
        answer(&st, "apps", "cluster.local", &query("web.apps.svc.cluster.local.", RecordType::MX)),
        Answer::Forward
    );
}

#[test]
fn garbage_gets_formerr_or_is_dropped() {
    let st = store();
    let m = reply(answer(&st, "apps", "cluster.local", &[0xab, 0xcd, 0xff, 0xff, 0x01]));
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(answer(&st, "apps", "cluster.local", &[0x01]), Answer::Drop);
}

#[tokio::test]
async fn forwarding_without_an_upstream_or_to_a_dead_one_is_servfail() {
    let q = query("example.com.", RecordType::A);
    let m = Message::from_vec(
        &forward(None, std::time::Duration::from_secs(1), &q, Transport::Udp).await,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.metadata.id, 0x1234);
    // A UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let m = Message::from_vec(
        &forward(Some(addr), std::time::Duration::from_millis(200), &q, Transport::Udp).await,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn forwarding_returns_the_upstream_reply() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, peer) = upstream.recv_from(&mut buf).await.unwrap();
        let request = Message::from_vec(&buf[..n]).unwrap();
        let mut m = Message::response(request.metadata.id, OpCode::Query);
        m.metadata.response_code = ResponseCode::NXDomain;
        upstream.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
    });
    let q = query("nowhere.example.", RecordType::A);
    let m = Message::from_vec(
        &forward(Some(addr), std::time::Duration::from_secs(5), &q, Transport::Udp).await,
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_query_that_came_over_tcp_is_forwarded_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let request = Message::from_vec(&buf).unwrap();
        let mut m = Message::response(request.metadata.id, OpCode::Query);
        m.metadata.response_code = ResponseCode::Refused;
        let bytes = m.to_vec().unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
    });
    let q = query("big.example.", RecordType::A);
    let reply = forward(Some(addr), std::time::Duration::from_secs(5), &q, Transport::Tcp).await;
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "the TCP upstream answered");
    // Over UDP the same upstream (TCP only) cannot answer: SERVFAIL.
    let reply =
        forward(Some(addr), std::time::Duration::from_millis(300), &q, Transport::Udp).await;
    assert_eq!(Message::from_vec(&reply).unwrap().metadata.response_code, ResponseCode::ServFail);
}
