//! Opening one CONNECT stream on a pooled connection, optionally with the
//! tunnel's first bytes sent along, and classifying how it failed.
//!
//! **First bytes.** A client that connects and then writes (most protocols)
//! has usually written its first request by the time the tunnel is being
//! opened. Sending those bytes as DATA right behind the CONNECT's HEADERS,
//! instead of after the server's 200, saves one round trip between the two
//! proxies on every new connection. In HTTP/2 this is safe to do: DATA is
//! scoped to the stream, so a refusal (401, 503) cannot misread the bytes
//! as another request the way an HTTP/1.1 proxy would; the server holds
//! them in the stream's flow-control window until the upstream is open, and
//! drops them with the stream when it refuses.
//!
//! The price is that such a stream may no longer be replayed blindly: if
//! the connection dies after the bytes left, the server may have opened the
//! upstream and delivered them, and a second attempt would deliver them
//! twice. It is replayed only when HTTP/2 says the server never processed
//! it — a GOAWAY whose last stream id is below ours (RFC 9113 §6.8) — and
//! otherwise fails with [`ConnectError::Interrupted`].

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};

use super::capture::{self, ErrorSlot};
use super::{ConnectError, ConnectRequest};
use crate::authority::{format_authority, format_forwarded};
use crate::tls::TlsError;

/// Names a failure of a connection: a TLS refusal carried as an I/O error
/// becomes the TLS error it is.
pub(super) fn connection_error(
    addr: SocketAddr,
    source: h2::Error,
    slot: &ErrorSlot,
) -> ConnectError {
    if source.is_io()
        && let Some(io) = capture::take(slot)
    {
        return match TlsError::from_io(io) {
            TlsError::Io(io) => ConnectError::Dial { addr, source: io },
            tls => ConnectError::Tls { addr, source: tls },
        };
    }
    ConnectError::H2 { addr, source }
}

pub(super) enum OpenError {
    /// The connection is unusable; another may work.
    ConnectionGone {
        source: h2::Error,
        /// Whether opening the stream again elsewhere cannot deliver any of
        /// its bytes twice.
        replayable: bool,
    },
    /// The server answered, and the answer is final.
    Refused(ConnectError),
}

/// Whether the server told us it never processed the stream that failed
/// with `e`. h2 fails a stream with the peer's GOAWAY only when the stream
/// is above the GOAWAY's last stream id; streams at or below it that die
/// later get an I/O error instead.
fn never_processed(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_remote()
}

/// Sends the CONNECT for `request` on `send`, then the bytes `first`
/// returns (if any) without waiting, then waits for the answer. `first` is
/// called once the connection can take the stream, as late as possible.
pub(super) async fn open_stream(
    send: &h2::client::SendRequest<Bytes>,
    request: &ConnectRequest,
    first: impl FnOnce() -> Bytes,
) -> Result<(h2::SendStream<Bytes>, h2::RecvStream), OpenError> {
    let addr = request.hbone_addr;
    let target = request.target;
    let gone_before_sending = |source| OpenError::ConnectionGone { source, replayable: true };
    let mut send = send.clone().ready().await.map_err(gone_before_sending)?;
    let http_request = connect_request(request).map_err(OpenError::Refused)?;
    let first = first();
    let (response, mut send_stream) =
        send.send_request(http_request, false).map_err(gone_before_sending)?;
    let sent_bytes = !first.is_empty();
    if sent_bytes {
        // h2 queues DATA beyond the stream's window and asks for the
        // capacity itself, so this never waits.
        send_stream.send_data(first, false).map_err(gone_before_sending)?;
    }
    let response = response.await.map_err(|source| {
        if source.is_io() || source.is_go_away() {
            let replayable = !sent_bytes || never_processed(&source);
            OpenError::ConnectionGone { source, replayable }
        } else {
            OpenError::Refused(ConnectError::H2 { addr, source })
        }
    })?;
    let refused = |e| Err(OpenError::Refused(e));
    match response.status() {
        StatusCode::OK => Ok((send_stream, response.into_body())),
        StatusCode::UNAUTHORIZED => refused(ConnectError::Denied { addr, target }),
        StatusCode::SERVICE_UNAVAILABLE => refused(ConnectError::Unavailable { addr, target }),
        StatusCode::BAD_REQUEST => refused(ConnectError::BadRequest { addr, target }),
        status => refused(ConnectError::UnexpectedStatus { addr, target, status }),
    }
}

fn connect_request(request: &ConnectRequest) -> Result<Request<()>, ConnectError> {
    let uri: Uri = format_authority(request.target)
        .parse()
        .map_err(|_| ConnectError::BadHeader(":authority"))?;
    let mut builder = Request::builder().method(Method::CONNECT).uri(uri);
    if let Some(src) = request.forwarded_for {
        builder = builder.header("forwarded", format_forwarded(src));
    }
    if let Some(baggage) = &request.baggage {
        builder = builder.header("baggage", baggage.as_str());
    }
    if let Some(traceparent) = &request.traceparent {
        builder = builder.header("traceparent", traceparent.as_str());
    }
    builder.body(()).map_err(|_| {
        ConnectError::BadHeader(if request.baggage.is_some() {
            "baggage or traceparent"
        } else {
            "traceparent"
        })
    })
}
