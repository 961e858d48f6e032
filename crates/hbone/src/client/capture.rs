//! Keeps the first I/O error of a connection with its type intact.
//!
//! h2 flattens I/O errors to a kind and a message, which loses the rustls
//! error inside (say, the alert a server sent after refusing our
//! certificate). This wrapper remembers the original so the pool can report
//! "the peer refused our certificate" instead of "invalid data".

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the first error is kept.
pub(crate) type ErrorSlot = Arc<Mutex<Option<io::Error>>>;

pub(crate) struct CaptureErrors<T> {
    inner: T,
    slot: ErrorSlot,
}

impl<T> CaptureErrors<T> {
    pub(crate) fn new(inner: T) -> (Self, ErrorSlot) {
        let slot = ErrorSlot::default();
        (Self { inner, slot: slot.clone() }, slot)
    }

    fn keep<R>(&self, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match result {
            Poll::Ready(Err(e)) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                if let Ok(mut slot) = self.slot.lock()
                    && slot.is_none()
                {
                    *slot = Some(e);
                }
                Poll::Ready(Err(copy))
            }
            other => other,
        }
    }
}

/// Takes the kept error, if any.
pub(crate) fn take(slot: &ErrorSlot) -> Option<io::Error> {
    slot.lock().ok().and_then(|mut s| s.take())
}

impl<T: AsyncRead + Unpin> AsyncRead for CaptureErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.keep(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CaptureErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.keep(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.keep(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.keep(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.keep(result)
    }
}
