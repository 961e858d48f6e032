//! The body type the engine forwards, and a wrapper that counts a body's
//! bytes and reports when it ends (for the request and response size
//! metrics, recorded when the exchange is over).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Why a body ended early: the error of the stream it came from.
///
/// A named type rather than `Box<dyn Error>` itself: hyper wants the body
/// error `Into<Box<dyn Error + Send + Sync>>`, and with the box as the error
/// the compiler cannot prove the serving future `Send` (a known
/// higher-ranked lifetime limitation).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

/// What the engine sends and answers with.
pub type Body = BoxBody<Bytes, BodyError>;

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body hyper read (its error boxed).
pub fn from_hyper<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    body.map_err(|e| BodyError(Box::new(e))).boxed()
}

/// Counts the data bytes that pass and calls `on_end` once, when the body
/// ends or is dropped, with the count.
pub struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl<B> Counted<B> {
    /// Wraps `inner`; `bytes` is shared so the caller can read the count
    /// while the body flows.
    pub fn new(
        inner: B,
        bytes: Arc<AtomicU64>,
        on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    ) -> Self {
        Self { inner, bytes, on_end }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes.load(Ordering::Relaxed));
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
