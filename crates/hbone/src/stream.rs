//! One HBONE stream as a byte stream: `AsyncRead + AsyncWrite` over an
//! HTTP/2 CONNECT stream's DATA frames.
//!
//! We drive `h2` directly rather than through hyper's CONNECT upgrade: the
//! upgrade path boxes the stream behind a second buffering layer and hides
//! the stream's flow control and reset codes, which the data path and its
//! error reporting need.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::splice::{ChunkIo, ReadBuffer};

/// Something to drop when the stream ends (e.g. a pool's stream count).
pub(crate) type StreamGuard = Box<dyn Send + Sync + 'static>;

/// A tunnelled byte stream. Reads return the peer's DATA; writes send DATA;
/// `shutdown` half-closes (END_STREAM) while reads carry on.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
    recv_done: bool,
    send_done: bool,
    _guard: Option<StreamGuard>,
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        guard: Option<StreamGuard>,
    ) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            recv_done: false,
            send_done: false,
            _guard: guard,
        }
    }
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("recv_done", &self.recv_done)
            .field("send_done", &self.send_done)
            .finish()
    }
}

fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err.into_io().unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = match err.reason() {
        Some(Reason::CANCEL) | Some(Reason::STREAM_CLOSED) => io::ErrorKind::ConnectionReset,
        Some(Reason::REFUSED_STREAM) => io::ErrorKind::ConnectionRefused,
        _ if err.is_go_away() => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, err)
}

impl H2Stream {
    /// The peer's next DATA chunk, `None` once it finished sending.
    fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        loop {
            if self.recv_done {
                return Poll::Ready(Ok(None));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // Give the window back as soon as the chunk is ours: we
                    // hold at most one chunk, so memory stays bounded.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    if !chunk.is_empty() {
                        return Poll::Ready(Ok(Some(chunk)));
                    }
                }
                // A NO_ERROR reset after the peer finished sending is a normal end.
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => self.recv_done = true,
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => self.recv_done = true,
            }
        }
    }

    /// Waits for send window for up to `wanted` bytes; returns how much may
    /// be sent now (at least 1).
    fn poll_send_capacity(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<io::Result<usize>> {
        if self.send_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the HBONE stream was shut down",
            )));
        }
        self.send.reserve_capacity(wanted);
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => return Poll::Ready(Ok(n.min(wanted))),
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => {
                    // The stream is no longer open for sending: say why.
                    return Poll::Ready(Err(match ready!(self.send.poll_reset(cx)) {
                        Ok(reason) => io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            format!("HBONE stream reset by peer: {reason:?}"),
                        ),
                        Err(e) => h2_to_io(e),
                    }));
                }
            }
        }
    }

    fn end_send(&mut self) -> io::Result<()> {
        if !self.send_done {
            self.send_done = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Ok(())
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(mut chunk) = ready!(this.poll_next_chunk(cx))? {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk.split_to(n));
            this.pending = chunk;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.poll_send_capacity(cx, buf.len()))?;
        this.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(h2_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // DATA is handed to the connection task, which writes it out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().end_send())
    }
}

/// Without copies: h2's chunks are handed out as they are, and chunks
/// written are handed to h2 as they are (split at the send window).
impl ChunkIo for H2Stream {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        _buffer: &mut ReadBuffer,
    ) -> Poll<io::Result<Option<Bytes>>> {
        self.poll_next_chunk(cx)
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        if chunk.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(self.poll_send_capacity(cx, chunk.len()))?;
        self.send.send_data(chunk.split_to(n), false).map_err(h2_to_io)?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown_write(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.end_send())
    }

    /// RST_STREAM(CANCEL): the peer's reads fail with a reset instead of
    /// ending at END_STREAM. (A stream already reset ignores it.)
    fn abort(&mut self, _failed: bool) {
        self.send_done = true;
        self.send.send_reset(Reason::CANCEL);
    }
}
