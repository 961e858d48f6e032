//! HTTP/2 PING keepalive: detects peers that vanished without closing.

use std::time::Duration;

use h2::{Ping, PingPong};

/// Pings every `interval`; returns (so the caller can close the connection)
/// once a ping goes unanswered for `timeout` or the connection is gone.
/// Never returns if `ping_pong` is `None` (keepalive unavailable).
pub(crate) async fn run(ping_pong: Option<PingPong>, interval: Duration, timeout: Duration) {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "keepalive ping failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?timeout, "keepalive ping unanswered");
                return;
            }
        }
    }
}
