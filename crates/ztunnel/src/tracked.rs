//! A proxied connection's upstream side, wrapped so that whatever copies
//! the bytes (our outbound loop or the HBONE server) also counts them,
//! reports metrics and the access-log line when the connection ends, shows
//! the connection on the admin endpoint while it is open, and ends it when
//! its pod is drained past the deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hbone::splice::{ChunkIo, ReadBuffer};
use proxy_core::connections::ConnectionGuard;
use proxy_core::tcp_metrics::TcpMetrics;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::info;

use crate::telemetry::{ConnectionFacts, Failure};

/// An upstream stream with accounting.
pub(crate) struct Tracked<S> {
    inner: S,
    to_destination: u64,
    from_destination: u64,
    facts: ConnectionFacts,
    metrics: TcpMetrics,
    opened: Instant,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set when the splice failed: the connection was reset, not ended.
    terminated: Option<Failure>,
    _guard: ConnectionGuard,
}

impl<S> Tracked<S> {
    /// Wraps `inner`; counts the connection as opened now.
    pub(crate) fn new(
        inner: S,
        facts: ConnectionFacts,
        metrics: TcpMetrics,
        guard: ConnectionGuard,
        kill: &CancellationToken,
    ) -> Self {
        metrics.opened(&facts.labels(None));
        Self {
            inner,
            to_destination: 0,
            from_destination: 0,
            facts,
            metrics,
            opened: Instant::now(),
            kill: kill.clone(),
            killed: Box::pin(kill.clone().cancelled_owned()),
            terminated: None,
            _guard: guard,
        }
    }

    /// Counts bytes that went to the destination before the stream was
    /// wrapped (a tunnel's first bytes, sent with its CONNECT).
    pub(crate) fn count_sent(&mut self, bytes: u64) {
        self.to_destination += bytes;
    }

    /// Fails once the connection's pod was drained past the deadline. The
    /// token is checked on every call (one atomic load); the wake-up is
    /// registered only when the caller is about to wait, so a busy
    /// connection does not touch the token's waiter list per chunk.
    fn check_killed(&mut self, cx: &mut Context<'_>, waiting: bool) -> io::Result<()> {
        let killed = if waiting {
            self.killed.as_mut().poll(cx).is_ready()
        } else {
            self.kill.is_cancelled()
        };
        if killed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection ended: its pod was drained",
            ));
        }
        Ok(())
    }
}

impl<S: ChunkIo> ChunkIo for Tracked<S> {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuffer,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let polled = self.inner.poll_read_chunk(cx, buffer);
        if let Poll::Ready(Ok(Some(chunk))) = &polled {
            self.from_destination += chunk.len() as u64;
        }
        self.check_killed(cx, polled.is_pending())?;
        polled
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        let before = chunk.len();
        let polled = self.inner.poll_write_chunk(cx, chunk);
        self.to_destination += (before - chunk.len()) as u64;
        self.check_killed(cx, polled.is_pending())?;
        polled
    }

    fn poll_flush_chunks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush_chunks(cx)
    }

    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_shutdown_write(cx)
    }

    /// Resets the upstream and records which side failed, so the close is
    /// counted and logged with a response flag, not as a success.
    fn abort(&mut self, failed: bool) {
        self.inner.abort(failed);
        self.terminated =
            Some(if failed { Failure::UpstreamTerminated } else { Failure::DownstreamTerminated });
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        let labels = self.facts.labels(self.terminated);
        self.metrics.closed(&labels, self.to_destination, self.from_destination);
        let reason = match self.terminated {
            Some(Failure::UpstreamTerminated) => "reset: the upstream side failed mid-connection",
            _ => "reset: the downstream side failed mid-connection",
        };
        let failure = self.terminated.map(|f| (f, reason));
        info!(
            target: "access",
            "{}",
            self.facts.log_line(self.to_destination, self.from_destination, self.opened.elapsed(), failure)
        );
    }
}

/// Registers a connection of `ctx`'s pod on the admin listing and wraps
/// its upstream.
pub(crate) fn open<S>(
    ctx: &crate::pod::PodContext,
    direction: proxy_core::connections::Direction,
    upstream: S,
    facts: ConnectionFacts,
) -> Tracked<S> {
    let guard = ctx.shared.connections.register(proxy_core::connections::ConnectionInfo {
        direction,
        workload: ctx.spec.uid.clone(),
        source: facts.source_addr,
        destination: facts.destination_addr,
        upstream: facts.upstream,
        source_identity: facts.source_identity.as_ref().map(ToString::to_string),
        destination_identity: facts.destination_identity.as_ref().map(ToString::to_string),
        protocol: if facts.mtls { "HBONE" } else { "TCP" },
        opened: std::time::SystemTime::now(),
    });
    Tracked::new(upstream, facts, ctx.shared.metrics.clone(), guard, &ctx.kill)
}

/// Reports a connection that failed before any byte moved: counted as
/// opened and closed with its flag, and logged with the reason.
pub(crate) fn report_failure(
    metrics: &TcpMetrics,
    facts: &ConnectionFacts,
    failure: crate::telemetry::Failure,
    reason: &str,
) {
    let labels = facts.labels(Some(failure));
    metrics.opened(&labels);
    metrics.closed(&labels, 0, 0);
    info!(
        target: "access",
        "{}",
        facts.log_line(0, 0, std::time::Duration::ZERO, Some((failure, reason)))
    );
}
