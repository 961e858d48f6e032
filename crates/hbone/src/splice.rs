//! Joining two byte streams both ways with owned chunks, so a proxy adds no
//! user-space copy of its own.
//!
//! `tokio::io::copy_bidirectional` reads into a buffer of its own and writes
//! from it; with an HBONE stream on one side that costs one extra copy of
//! every byte each way (h2 takes owned `Bytes`, so the buffer is copied into
//! one on the way out, and h2's `Bytes` are copied into the buffer on the
//! way in). Here the socket side reads straight into a `BytesMut` that is
//! frozen and handed to h2, and h2's chunks are written straight to the
//! socket. The copies that remain are the kernel's and TLS's.
//!
//! Reads from sockets start at one TLS record's worth and grow while they
//! come back full, up to four records. Sizes are whole records less the
//! 9-byte HTTP/2 frame header: a chunk read from the socket becomes one DATA
//! frame, and frame header + payload then fill whole TLS records. A 64 KiB
//! read would leave a 9-byte fifth record per frame — one more AES-GCM
//! seal, 22 bytes of overhead and often one more `writev`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest TLS record payload (RFC 8446 §5.1).
const TLS_RECORD: usize = 16 * 1024;
/// HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
/// First read size of each direction: one TLS record with its frame header.
pub const MIN_READ: usize = TLS_RECORD - FRAME_HEADER;
/// Largest read size: two records. Under load each stream holds about two
/// chunks (one read, one queued in h2), so this sets memory per busy
/// stream: 64 streams peaked the sending ztunnel at 15 MiB instead of
/// 18 MiB with four records, for ~7% less single-stream throughput and
/// 4–9% more CPU per byte (medians of 4 alternating pairs,
/// `scripts/ztunnel-ab.py`; docs/performance.md). Memory per busy stream
/// is what grows with a node's load, so it wins here.
pub const MAX_READ: usize = 2 * TLS_RECORD - FRAME_HEADER;

/// A byte stream that hands over and takes owned chunks.
pub trait ChunkIo: Unpin {
    /// The next chunk, `Ok(None)` at the end of the stream. Byte streams
    /// read into `buffer`; streams that already own their chunks ignore it.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuffer,
    ) -> Poll<io::Result<Option<Bytes>>>;

    /// Writes from the front of `chunk` and advances it past what was
    /// taken; ready once at least one byte was.
    fn poll_write_chunk(&mut self, cx: &mut Context<'_>, chunk: &mut Bytes)
    -> Poll<io::Result<()>>;

    /// Pushes out anything written but held back.
    fn poll_flush_chunks(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-closes the writing side; reading carries on.
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the stream abnormally, because the splice it was in failed:
    /// its peer must see a reset, never an end of stream it could take for
    /// a complete transfer. `failed` is true when this stream's own side is
    /// the one that failed (the other side's failure is the usual cause).
    fn abort(&mut self, _failed: bool) {}
}

/// One direction's read buffer, sized to what the stream delivers.
#[derive(Debug)]
pub struct ReadBuffer {
    buf: BytesMut,
    size: usize,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self { buf: BytesMut::new(), size: MIN_READ }
    }
}

impl ReadBuffer {
    /// Reads once from `io` into an owned chunk. The allocation is reused
    /// once the previous chunk has been dropped by whoever took it.
    pub fn poll_read_from<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
    ) -> Poll<io::Result<Option<Bytes>>> {
        if self.buf.capacity() < self.size {
            self.buf.reserve(self.size);
        }
        // Exactly `size`, even when the allocation has more room.
        let mut limited = (&mut self.buf).limit(self.size);
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut limited))?;
        if n == 0 {
            return Poll::Ready(Ok(None));
        }
        if n >= self.size {
            // 1 → 2 → 4 records, each less its frame header.
            self.size = ((self.size + FRAME_HEADER) * 2 - FRAME_HEADER).min(MAX_READ);
        }
        Poll::Ready(Ok(Some(self.buf.split().freeze())))
    }
}

impl ChunkIo for TcpStream {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuffer,
    ) -> Poll<io::Result<Option<Bytes>>> {
        buffer.poll_read_from(cx, self)
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut *self).poll_write(cx, chunk))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        chunk.advance(n);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }

    /// A zero linger time makes the close that follows (the stream is
    /// dropped next) send RST instead of FIN.
    fn abort(&mut self, _failed: bool) {
        let _ = self.set_zero_linger();
    }
}

/// One direction of a splice.
#[derive(Debug, Default)]
struct Direction {
    buffer: ReadBuffer,
    /// Read but not yet fully written.
    pending: Option<Bytes>,
    /// Written since the last flush.
    unflushed: bool,
    eof: bool,
    done: bool,
    moved: u64,
}

/// Which stream of a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// The one read from.
    From,
    /// The one written to.
    To,
}

impl Direction {
    fn poll_move<R: ChunkIo, W: ChunkIo>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<Result<(), (Failed, io::Error)>> {
        let writing = |e| (Failed::To, e);
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if let Some(chunk) = &mut self.pending {
                while !chunk.is_empty() {
                    let before = chunk.len();
                    ready!(to.poll_write_chunk(cx, chunk)).map_err(writing)?;
                    self.moved += (before - chunk.len()) as u64;
                    self.unflushed = true;
                }
                self.pending = None;
            }
            if self.eof {
                ready!(to.poll_flush_chunks(cx)).map_err(writing)?;
                ready!(to.poll_shutdown_write(cx)).map_err(writing)?;
                self.done = true;
                continue;
            }
            match from.poll_read_chunk(cx, &mut self.buffer) {
                Poll::Ready(Ok(Some(chunk))) => self.pending = Some(chunk),
                Poll::Ready(Ok(None)) => self.eof = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Failed::From, e))),
                Poll::Pending => {
                    // Nothing more to read for now: what was written must
                    // not sit in a buffer while we wait.
                    if self.unflushed {
                        ready!(to.poll_flush_chunks(cx)).map_err(writing)?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Copies `a` → `b` and `b` → `a` until both have ended, passing each
/// end of stream on as a half-close. Returns the bytes moved each way
/// (`a` → `b`, `b` → `a`). The first error ends both directions and
/// aborts both streams ([`ChunkIo::abort`]): a failure on one side reaches
/// the other as a reset, never as a clean end that would make a truncated
/// transfer look complete.
pub async fn splice<A: ChunkIo, B: ChunkIo>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)> {
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    let joined = poll_fn(|cx| {
        // `true`: the error is `a`'s.
        let forward =
            a_to_b.poll_move(cx, a, b).map_err(|(failed, e)| (failed == Failed::From, e))?;
        let backward =
            b_to_a.poll_move(cx, b, a).map_err(|(failed, e)| (failed == Failed::To, e))?;
        match (forward, backward) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await;
    if let Err((a_failed, e)) = joined {
        a.abort(a_failed);
        b.abort(!a_failed);
        return Err(e);
    }
    Ok((a_to_b.moved, b_to_a.moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn reads_grow_while_full_and_stop_at_the_maximum() {
        // A source that fills every read it is given, so the sizes asked for
        // are the sizes seen (a socket's would depend on its buffers).
        let mut source = tokio::io::repeat(7).take(4 * MAX_READ as u64);
        let mut buffer = ReadBuffer::default();
        let mut sizes = Vec::new();
        while let Some(chunk) = poll_fn(|cx| buffer.poll_read_from(cx, &mut source)).await.unwrap()
        {
            assert!(chunk.iter().all(|b| *b == 7));
            sizes.push(chunk.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 4 * MAX_READ);
        assert_eq!(&sizes[..4], &[MIN_READ, 2 * TLS_RECORD - FRAME_HEADER, MAX_READ, MAX_READ]);
        assert_eq!(sizes.iter().max(), Some(&MAX_READ), "reads stop growing at the maximum");
        assert_eq!((MAX_READ + FRAME_HEADER) % TLS_RECORD, 0, "frames fill whole records");
    }

    #[tokio::test]
    async fn a_reset_on_one_side_reaches_the_other_as_a_reset() {
        // client ⇄ (a | splice | b) ⇄ server; the client dies mid-upload.
        let (client, mut a) = pair().await;
        let (mut b, mut server) = pair().await;
        let proxy = tokio::spawn(async move { splice(&mut a, &mut b).await });
        let mut client = client;
        client.write_all(&[1u8; 1000]).await.unwrap();
        let mut got = [0u8; 1000];
        server.read_exact(&mut got).await.unwrap();
        client.set_zero_linger().unwrap();
        drop(client);
        assert!(proxy.await.unwrap().is_err(), "the splice saw the reset");
        let mut rest = Vec::new();
        let err = server.read_to_end(&mut rest).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "not a clean end: {err}");
    }

    #[tokio::test]
    async fn moves_both_ways_and_passes_half_closes_on() {
        // client ⇄ (a | splice | b) ⇄ server
        let (mut client, mut a) = pair().await;
        let (mut b, mut server) = pair().await;
        let proxy = tokio::spawn(async move { splice(&mut a, &mut b).await });
        let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let download: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let (up, down) = (upload.clone(), download.clone());
        let client_side = tokio::spawn(async move {
            client.write_all(&up).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, upload, "upload arrived intact after the client's half-close");
        server.write_all(&down).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(client_side.await.unwrap(), download);
        let (forward, backward) = proxy.await.unwrap().unwrap();
        assert_eq!((forward, backward), (upload.len() as u64, download.len() as u64));
    }
}
