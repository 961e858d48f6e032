//! Telling HTTP from other bytes on a port whose protocol is undeclared:
//! the first bytes the client sends are read and kept, and replayed in
//! front of the stream for whoever serves it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Prefixed<I> {
    prefix: BytesMut,
    inner: I,
}

impl<I> Prefixed<I> {
    /// `prefix`, then `inner`.
    pub fn new(prefix: BytesMut, inner: I) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line or the HTTP/2 preface.
    Http,
    /// Anything else, or nothing within the wait (a server-speaks-first
    /// protocol).
    Tcp,
}

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
    b"PRI ",
];

/// Classifies `bytes` when they are enough to tell; `None` while a longer
/// prefix could still be either.
pub fn classify(bytes: &[u8]) -> Option<Detected> {
    let mut undecided = false;
    for m in METHODS {
        let n = bytes.len().min(m.len());
        if bytes[..n] == m[..n] {
            if n == m.len() {
                return Some(Detected::Http);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(Detected::Tcp) }
}

/// Reads until the first bytes tell HTTP from TCP, for at most `wait`.
/// The bytes read are kept in the returned stream.
pub async fn detect<I: AsyncRead + Unpin>(
    mut io: I,
    wait: Duration,
) -> io::Result<(Detected, Prefixed<I>)> {
    let mut buf = BytesMut::with_capacity(16);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(d) = classify(&buf).filter(|_| !buf.is_empty()) {
            return Ok((d, Prefixed::new(buf, io)));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok((Detected::Tcp, Prefixed::new(buf, io))),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_request_lines_and_the_preface() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Detected::Tcp), "a TLS hello");
        assert_eq!(classify(b"GETX"), Some(Detected::Tcp));
        assert_eq!(classify(b"SSH-2.0"), Some(Detected::Tcp));
    }

    #[tokio::test]
    async fn the_bytes_read_are_replayed() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PO").await.unwrap();
        let task = tokio::spawn(detect(server, Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"ST /x HTTP/1.1\r\n").await.unwrap();
        let (detected, mut io) = task.await.unwrap().unwrap();
        assert_eq!(detected, Detected::Http);
        let mut line = vec![0; 18];
        io.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"POST /x HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn silence_is_tcp() {
        let (_client, server) = tokio::io::duplex(64);
        let (detected, _) = detect(server, Duration::from_millis(20)).await.unwrap();
        assert_eq!(detected, Detected::Tcp);
    }
}
