//! ZDS: how the node agent hands pods to ztunnel.
//!
//! One `SOCK_SEQPACKET` unix socket, one protobuf message per datagram
//! (Istio's `istio.workload.zds` messages). ztunnel connects and says
//! `ZdsHello`; the agent then sends `AddWorkload` for every captured pod —
//! with the pod's network namespace as a file descriptor (`SCM_RIGHTS`) —
//! then `SnapshotSent`, then live `AddWorkload` / `DelWorkload` as pods come
//! and go. ztunnel answers every request with an `Ack` (empty error = ok).
//!
//! This crate holds both ends: [`ZdsConnection`] (ztunnel's side) and
//! [`ZdsListener`] / [`ZdsPeer`] (the agent's side). It knows nothing of what
//! either side does with a pod.
//!
//! Why not a stream socket: SEQPACKET keeps message boundaries and ties a
//! descriptor to exactly one message, so no framing code is needed and a fd
//! can never be attributed to the wrong request.

mod agent;
mod proxy;

use std::io;

pub use agent::{ZdsListener, ZdsPeer};
pub use mesh_proto::zds::{AddWorkload, WorkloadInfo, workload_request::Payload};
pub use proxy::{ZdsConnection, ZdsRequest, interpret};

/// Largest message either side accepts (a WorkloadInfo is a few hundred
/// bytes; anything near this is garbage).
const MAX_MESSAGE: usize = 64 * 1024;

/// Room for the control message carrying one descriptor.
const ANCILLARY_BUFFER: usize = 128;

/// What went wrong on a ZDS socket.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    /// The socket failed.
    #[error("ZDS socket I/O failed")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("the ZDS peer closed the connection")]
    Closed,
    /// A datagram was not the expected protobuf message.
    #[error("malformed ZDS message (expected {expected})")]
    Decode {
        /// The message type expected.
        expected: &'static str,
        /// Why it did not decode.
        #[source]
        source: prost::DecodeError,
    },
    /// A datagram was larger than any valid message.
    #[error("ZDS message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The message made no sense at this point of the conversation.
    #[error("unexpected ZDS message: {0}")]
    Unexpected(String),
    /// The peer speaks another protocol version.
    #[error("ZDS peer speaks version {0}; only V1 is supported")]
    Version(i32),
    /// ztunnel refused a request (its ack carried an error).
    #[error("ztunnel refused the request: {0}")]
    Refused(String),
    /// No ack arrived in time.
    #[error("no ZDS ack within the timeout")]
    Timeout,
}

/// Receives one datagram, with at most one descriptor.
async fn recv(
    socket: &tokio_seqpacket::UnixSeqpacket,
) -> Result<(Vec<u8>, Option<std::os::fd::OwnedFd>), ZdsError> {
    use tokio_seqpacket::ancillary::OwnedAncillaryMessage;

    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut ancillary = [0u8; ANCILLARY_BUFFER];
    let (info, reader) = socket.recv_with_ancillary(&mut buffer, &mut ancillary).await?;
    if info.truncated() {
        return Err(ZdsError::TooLarge);
    }
    let mut fds = Vec::new();
    for message in reader.into_messages() {
        if let OwnedAncillaryMessage::FileDescriptors(received) = message {
            fds.extend(received);
        }
    }
    if info.bytes_read() == 0 && fds.is_empty() {
        return Err(ZdsError::Closed);
    }
    if fds.len() > 1 {
        // Extra descriptors are closed on drop; a message carries one at most.
        return Err(ZdsError::Unexpected(format!("{} descriptors in one message", fds.len())));
    }
    buffer.truncate(info.bytes_read());
    Ok((buffer, fds.pop()))
}
