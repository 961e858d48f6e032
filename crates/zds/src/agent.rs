//! The node agent's side: listen, accept ztunnel, send requests and wait
//! for each ack.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use mesh_proto::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadInfo,
    WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload, workload_response,
};
use prost::Message;
use tokio_seqpacket::ancillary::AncillaryMessageWriter;
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};

use crate::{ANCILLARY_BUFFER, ZdsError, recv};

/// How long the agent waits for ztunnel's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's listening socket.
#[derive(Debug)]
pub struct ZdsListener {
    listener: UnixSeqpacketListener,
}

/// One connected ztunnel.
#[derive(Debug)]
pub struct ZdsPeer {
    socket: UnixSeqpacket,
}

impl ZdsListener {
    /// Binds `path`, replacing a socket file left by a previous run.
    pub fn bind(path: &Path) -> Result<Self, ZdsError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self { listener: UnixSeqpacketListener::bind(path)? })
    }

    /// Accepts the next ztunnel and reads its hello.
    pub async fn accept(&mut self) -> Result<ZdsPeer, ZdsError> {
        let socket = self.listener.accept().await?;
        let (bytes, fd) = tokio::time::timeout(ACK_TIMEOUT, recv(&socket))
            .await
            .map_err(|_| ZdsError::Timeout)??;
        if fd.is_some() {
            return Err(ZdsError::Unexpected("a descriptor with the hello".into()));
        }
        let hello = ZdsHello::decode(bytes.as_slice())
            .map_err(|source| ZdsError::Decode { expected: "ZdsHello", source })?;
        if hello.version != Version::V1 as i32 {
            return Err(ZdsError::Version(hello.version));
        }
        Ok(ZdsPeer { socket })
    }
}

impl ZdsPeer {
    /// Hands over a pod and its network namespace.
    pub async fn add(
        &self,
        uid: &str,
        info: WorkloadInfo,
        netns: BorrowedFd<'_>,
    ) -> Result<(), ZdsError> {
        let request = WorkloadRequest {
            payload: Some(Payload::Add(AddWorkload {
                uid: uid.to_string(),
                workload_info: Some(info),
            })),
        };
        let fds = [netns];
        let mut buffer = [0u8; ANCILLARY_BUFFER];
        let mut ancillary = AncillaryMessageWriter::new(&mut buffer);
        ancillary
            .add_fds(&fds)
            .map_err(|_| ZdsError::Unexpected("no room for the descriptor".into()))?;
        self.socket.send_with_ancillary(&request.encode_to_vec(), &mut ancillary).await?;
        self.wait_ack().await
    }

    /// Says a pod from a previous connection still exists (no namespace).
    pub async fn keep(&self, uid: &str) -> Result<(), ZdsError> {
        self.send(Payload::Keep(KeepWorkload { uid: uid.to_string() })).await
    }

    /// Takes a pod back.
    pub async fn del(&self, uid: &str) -> Result<(), ZdsError> {
        self.send(Payload::Del(DelWorkload { uid: uid.to_string() })).await
    }

    /// Ends the snapshot: ztunnel drops pods the snapshot did not name.
    pub async fn snapshot_sent(&self) -> Result<(), ZdsError> {
        self.send(Payload::SnapshotSent(SnapshotSent {})).await
    }

    async fn send(&self, payload: Payload) -> Result<(), ZdsError> {
        let request = WorkloadRequest { payload: Some(payload) };
        self.socket.send(&request.encode_to_vec()).await?;
        self.wait_ack().await
    }

    async fn wait_ack(&self) -> Result<(), ZdsError> {
        let (bytes, fd) = tokio::time::timeout(ACK_TIMEOUT, recv(&self.socket))
            .await
            .map_err(|_| ZdsError::Timeout)??;
        if fd.is_some() {
            return Err(ZdsError::Unexpected("a descriptor with an ack".into()));
        }
        let response = WorkloadResponse::decode(bytes.as_slice())
            .map_err(|source| ZdsError::Decode { expected: "WorkloadResponse", source })?;
        match response.payload {
            Some(workload_response::Payload::Ack(Ack { error })) if error.is_empty() => Ok(()),
            Some(workload_response::Payload::Ack(Ack { error })) => Err(ZdsError::Refused(error)),
            None => Err(ZdsError::Unexpected("WorkloadResponse without a payload".into())),
        }
    }
}
