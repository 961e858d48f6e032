//! Accepting connections, the one way every listener of the mesh does it.
//!
//! An accept can fail for reasons that accepting again at once only
//! repeats: the process is out of descriptors (`EMFILE`), the system is
//! (`ENFILE`), or memory or buffers are short. Retrying in a tight loop
//! burns a core and floods the log while the condition lasts, so those
//! errors are logged and followed by a pause. Errors about one connection
//! (it was aborted or reset before it was accepted) are not the listener's
//! trouble: the next accept goes ahead at once.
//!
//! [`Refusals`] counts what a bounded listener turns away, with a log line
//! that a flood cannot multiply.
//!
//! It lives here, the lowest crate all our servers (proxies, control
//! plane, node agent) share, so there is exactly one.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

/// How long a listener waits after an accept error that is not about one
/// connection.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The next connection from `accept` (typically `|| listener.accept()`),
/// pausing [`ACCEPT_ERROR_PAUSE`] after each error that is not about one
/// connection, with a log line naming the listener (`what`).
pub async fn next_connection<T, F, Fut>(what: &str, mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(connection) => return connection,
            Err(e) if about_one_connection(&e) => {
                debug!(listener = what, error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                warn!(listener = what, error = %e, pause = ?ACCEPT_ERROR_PAUSE, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Counts what a bounded listener turned away (connections past a limit,
/// queries past a limit) and logs the first refusal and then every power of
/// two, so a flood is visible but cannot flood the log.
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    limit: usize,
    count: AtomicU64,
}

impl Refusals {
    /// Refusals of `what` past `limit`.
    pub fn new(what: &'static str, limit: usize) -> Self {
        Self { what, limit, count: AtomicU64::new(0) }
    }

    /// Counts one refusal (and logs it at powers of two).
    pub fn refuse(&self) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(limit = self.limit, refused = n, "too many {}; refusing more", self.what);
        }
    }

    /// Refusals so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// How long `next_connection` took over `script` (paused time).
    async fn time_to_accept(results: Vec<io::Result<u32>>) -> Duration {
        let script = Mutex::new(VecDeque::from(results));
        let start = tokio::time::Instant::now();
        let got = next_connection("test", || {
            let next = script.lock().unwrap().pop_front().unwrap();
            async move { next }
        })
        .await;
        assert_eq!(got, 7);
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_pauses_before_the_next_accept() {
        let emfile = || io::Error::from_raw_os_error(24);
        let elapsed = time_to_accept(vec![Err(emfile()), Err(emfile()), Ok(7)]).await;
        assert_eq!(elapsed, 2 * ACCEPT_ERROR_PAUSE, "one pause per EMFILE");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_aborted_before_accept_does_not_pause() {
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(time_to_accept(vec![Err(aborted), Ok(7)]).await, Duration::ZERO);
    }

    #[test]
    fn refusals_are_counted() {
        let refusals = Refusals::new("things", 1);
        for _ in 0..5 {
            refusals.refuse();
        }
        assert_eq!(refusals.count(), 5);
    }
}
