//! ztunnel's side: connect, say hello, receive requests, ack each.

use std::os::fd::OwnedFd;
use std::path::Path;

use mesh_proto::zds::{
    Ack, Version, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request::Payload,
    workload_response,
};
use prost::Message;
use tokio_seqpacket::UnixSeqpacket;

use crate::{ZdsError, recv};

/// One request from the agent, with the namespace that came with it.
#[derive(Debug)]
pub struct ZdsRequest {
    /// What the agent asks.
    pub payload: Payload,
    /// The pod's network namespace (with `AddWorkload` only).
    pub netns: Option<OwnedFd>,
}

/// What one datagram from the agent asks, with the descriptor it carried.
/// Pure, so what a peer controls is fuzzed (`tests/fuzz.rs`).
pub fn interpret(bytes: &[u8], netns: Option<OwnedFd>) -> Result<ZdsRequest, ZdsError> {
    let request = WorkloadRequest::decode(bytes)
        .map_err(|source| ZdsError::Decode { expected: "WorkloadRequest", source })?;
    let payload = request
        .payload
        .ok_or_else(|| ZdsError::Unexpected("WorkloadRequest without a payload".into()))?;
    match (&payload, &netns) {
        (Payload::Add(_), None) => {
            Err(ZdsError::Unexpected("AddWorkload without a network namespace".into()))
        }
        (Payload::Add(_), Some(_)) | (_, None) => Ok(ZdsRequest { payload, netns }),
        (_, Some(_)) => {
            Err(ZdsError::Unexpected("a descriptor with a request that takes none".into()))
        }
    }
}

/// ztunnel's connection to the node agent.
#[derive(Debug)]
pub struct ZdsConnection {
    socket: UnixSeqpacket,
}

impl ZdsConnection {
    /// Connects to the agent's socket and sends `ZdsHello`.
    pub async fn connect(path: &Path) -> Result<Self, ZdsError> {
        let socket = UnixSeqpacket::connect(path).await?;
        let hello = ZdsHello { version: Version::V1 as i32 };
        socket.send(&hello.encode_to_vec()).await?;
        Ok(Self { socket })
    }

    /// Wraps an already connected socket (tests; a socket pair). Sends no
    /// hello.
    pub fn from_socket(socket: UnixSeqpacket) -> Self {
        Self { socket }
    }

    /// The next request. An `AddWorkload` without a namespace, or any other
    /// request with one, is an error (the descriptor is closed).
    pub async fn next(&self) -> Result<ZdsRequest, ZdsError> {
        let (bytes, netns) = recv(&self.socket).await?;
        interpret(&bytes, netns)
    }

    /// Acknowledges the last request; `error` says why it failed.
    pub async fn ack(&self, error: Option<String>) -> Result<(), ZdsError> {
        let response = WorkloadResponse {
            payload: Some(workload_response::Payload::Ack(Ack {
                error: error.unwrap_or_default(),
            })),
        };
        self.socket.send(&response.encode_to_vec()).await?;
        Ok(())
    }
}
