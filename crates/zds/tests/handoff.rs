//! Both ends of ZDS over a real SEQPACKET socket: descriptors arrive with
//! their message, every request is acked, garbage is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;

use prost::Message;
use tokio_seqpacket::UnixSeqpacket;
use zds::{Payload, WorkloadInfo, ZdsConnection, ZdsError, ZdsListener};

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo { name: name.into(), namespace: "apps".into(), service_account: "web".into() }
}

#[tokio::test]
async fn add_keep_del_snapshot_each_acked_and_the_fd_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zds.sock");
    let mut listener = ZdsListener::bind(&path).unwrap();
    let client = tokio::spawn({
        let path = path.clone();
        async move {
            let conn = ZdsConnection::connect(&path).await.unwrap();
            let mut seen = Vec::new();
            loop {
                let request = match conn.next().await {
                    Ok(r) => r,
                    Err(ZdsError::Closed) => return seen,
                    Err(e) => panic!("{e}"),
                };
                match &request.payload {
                    Payload::Add(add) => {
                        // The descriptor is the agent's file: read what it wrote.
                        let mut file = std::fs::File::from(request.netns.unwrap());
                        file.rewind().unwrap();
                        let mut text = String::new();
                        file.read_to_string(&mut text).unwrap();
                        seen.push(format!("add {} {text}", add.uid));
                        conn.ack(None).await.unwrap();
                    }
                    Payload::Keep(k) => {
                        seen.push(format!("keep {}", k.uid));
                        conn.ack(Some("unknown pod".into())).await.unwrap();
                    }
                    Payload::Del(d) => {
                        seen.push(format!("del {}", d.uid));
                        conn.ack(None).await.unwrap();
                    }
                    Payload::SnapshotSent(_) => {
                        seen.push("snapshot".into());
                        conn.ack(None).await.unwrap();
                    }
                }
            }
        }
    });
    let peer = listener.accept().await.unwrap();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"namespace-of-web").unwrap();
    peer.add("uid-1", info("web"), file.as_fd()).await.unwrap();
    peer.snapshot_sent().await.unwrap();
    let refused = peer.keep("uid-2").await.unwrap_err();
    assert!(matches!(&refused, ZdsError::Refused(m) if m == "unknown pod"), "{refused}");
    peer.del("uid-1").await.unwrap();
    drop(peer);
    let seen = client.await.unwrap();
    assert_eq!(seen, ["add uid-1 namespace-of-web", "snapshot", "keep uid-2", "del uid-1"]);
}

#[tokio::test]
async fn garbage_and_protocol_violations_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zds.sock");
    let mut listener = ZdsListener::bind(&path).unwrap();

    // A peer whose hello is garbage.
    let raw = UnixSeqpacket::connect(&path).await.unwrap();
    raw.send(&[0xff, 0xff, 0xff]).await.unwrap();
    let err = listener.accept().await.unwrap_err();
    assert!(matches!(err, ZdsError::Decode { expected: "ZdsHello", .. }), "{err}");

    // A peer speaking a future version.
    let raw = UnixSeqpacket::connect(&path).await.unwrap();
    raw.send(&mesh_proto::zds::ZdsHello { version: 7 }.encode_to_vec()).await.unwrap();
    assert!(matches!(listener.accept().await.unwrap_err(), ZdsError::Version(7)));

    // ztunnel's side: an AddWorkload without a namespace, then garbage.
    let (a, b) = UnixSeqpacket::pair().unwrap();
    let add = mesh_proto::zds::WorkloadRequest {
        payload: Some(Payload::Add(mesh_proto::zds::AddWorkload {
            uid: "u".into(),
            workload_info: None,
        })),
    };
    a.send(&add.encode_to_vec()).await.unwrap();
    a.send(b"\x0a\xff\xff").await.unwrap();
    drop(a);
    let conn = zds_connection_from(b);
    let err = conn.next().await.unwrap_err();
    assert!(err.to_string().contains("without a network namespace"), "{err}");
    let err = conn.next().await.unwrap_err();
    assert!(matches!(err, ZdsError::Decode { expected: "WorkloadRequest", .. }), "{err}");
    assert!(matches!(conn.next().await.unwrap_err(), ZdsError::Closed));
}

/// A connection over one end of a socket pair (no hello exchange).
fn zds_connection_from(socket: UnixSeqpacket) -> ZdsConnection {
    ZdsConnection::from_socket(socket)
}
