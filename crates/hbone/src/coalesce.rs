//! Write coalescing between HTTP/2 and TLS: the small frames that many
//! tunnels produce in one pass of the scheduler leave in one TLS record and
//! one system call.
//!
//! h2 asks its transport to flush after every DATA frame it does not copy
//! into its own buffer (with vectored I/O, any payload over 256 bytes), and
//! tokio-rustls seals a record and calls `writev` on every write. Without
//! this layer every small response of every tunnel on a connection cost a
//! record and a `writev` (which on a veth pair also runs the receiver's
//! network stack): in the waypoint, 17 writes of 490 bytes where one of
//! 8 KiB would do, and most of a request's CPU (`docs/performance.md`).
//!
//! Hand-written because the rule is about *when* to write, which no buffered
//! writer in our crates lets us choose (tokio's `BufWriter` writes on every
//! flush, which is the call h2 makes too often):
//! - a write under [`PASS_THROUGH`] bytes is copied into the buffer (the
//!   buffer is written out first if it would overflow [`CAPACITY`]);
//! - a larger write writes the buffer out, then goes straight through, so
//!   bulk transfers keep their one-copy path;
//! - `poll_flush` with bytes waiting does not write: it wakes the task and
//!   returns ready. The bytes go out at the start of the task's next poll,
//!   which h2 always begins by reading: `poll_read` writes them first. By
//!   then every tunnel the scheduler ran in between has added its frames;
//! - `poll_shutdown` writes everything before shutting down.
//!
//! The delay is one trip through the scheduler's queue, never a timer: a
//! lone request waits for nothing but the tasks already runnable.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most that is buffered: one full TLS record of plaintext.
pub(crate) const CAPACITY: usize = 16 * 1024;

/// Writes of at least this many bytes are not copied.
pub(crate) const PASS_THROUGH: usize = 8 * 1024;

/// A transport whose small writes wait for the end of the task's turn
/// (when `enabled`; otherwise every call goes straight through).
pub(crate) struct Coalesce<T> {
    inner: T,
    enabled: bool,
    buf: Vec<u8>,
    /// How much of `buf` the transport has taken.
    written: usize,
    /// The transport took bytes it has not been asked to flush.
    unflushed: bool,
    /// The task was woken to write what is waiting.
    armed: bool,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(inner: T, enabled: bool) -> Self {
        Self { inner, enabled, buf: Vec::new(), written: 0, unflushed: false, armed: false }
    }

    fn waiting(&self) -> bool {
        self.written < self.buf.len() || self.unflushed
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Hands the buffer to the transport (not flushed).
    fn poll_write_buffer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.unflushed = true;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes and flushes everything waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_buffer(cx))?;
        if self.unflushed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.unflushed = false;
        }
        self.armed = false;
        Poll::Ready(Ok(()))
    }

    fn write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.enabled {
            // Straight through, nothing kept: no flush owed later.
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total >= PASS_THROUGH {
            ready!(self.poll_write_buffer(cx))?;
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
            self.unflushed = true;
            return Poll::Ready(Ok(n));
        }
        if self.buf.len() + total > CAPACITY {
            ready!(self.poll_write_buffer(cx))?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CAPACITY);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting() {
            // Pending: the transport is full and will wake the task when
            // it is not; the bytes stay until then.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting() {
            if !this.armed {
                this.armed = true;
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// Bytes the far end can read now, without waiting.
    async fn readable_now(far: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut chunk)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_next_read_then_leave_together() {
        let (near, mut far) = duplex(1 << 20);
        let mut io = Coalesce::new(near, true);
        io.write_all(b"one ").await.unwrap();
        io.flush().await.unwrap();
        io.write_all(b"two").await.unwrap();
        io.flush().await.unwrap();
        assert!(readable_now(&mut far).await.is_empty(), "a flush alone must not write");
        // The next poll of the task begins with a read: that writes.
        let mut none = [0u8; 1];
        let read = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut none);
            match Pin::new(&mut io).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r)),
            }
        })
        .await;
        assert!(read.is_none(), "nothing to read yet");
        assert_eq!(readable_now(&mut far).await, b"one two");
    }

    #[tokio::test]
    async fn disabled_it_writes_at_once() {
        let (near, mut far) = duplex(1 << 20);
        let mut io = Coalesce::new(near, false);
        io.write_all(b"now").await.unwrap();
        assert!(!io.waiting(), "nothing kept, so no flush owed on the next read");
        io.flush().await.unwrap();
        assert_eq!(readable_now(&mut far).await, b"now");
    }

    #[tokio::test]
    async fn flush_with_bytes_waiting_wakes_the_task() {
        let (near, _far) = duplex(1 << 20);
        let mut io = Coalesce::new(near, true);
        io.write_all(b"x").await.unwrap();
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Flag(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst), "the task must come back");
    }

    #[tokio::test]
    async fn large_writes_go_through_after_what_was_waiting() {
        let (near, mut far) = duplex(1 << 20);
        let mut io = Coalesce::new(near, true);
        io.write_all(b"head").await.unwrap();
        let big = vec![7u8; PASS_THROUGH];
        io.write_all(&big).await.unwrap();
        let got = readable_now(&mut far).await;
        assert_eq!(&got[..4], b"head", "order kept");
        assert_eq!(got.len(), 4 + PASS_THROUGH);
    }

    #[tokio::test]
    async fn overflow_writes_the_buffer_first_and_shutdown_writes_the_rest() {
        let (near, mut far) = duplex(1 << 20);
        let mut io = Coalesce::new(near, true);
        let piece = vec![1u8; PASS_THROUGH - 1];
        for _ in 0..3 {
            io.write_all(&piece).await.unwrap();
        }
        // Two pieces fit the buffer; the third pushed them out.
        assert_eq!(readable_now(&mut far).await.len(), 2 * piece.len());
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), piece.len());
    }
}
