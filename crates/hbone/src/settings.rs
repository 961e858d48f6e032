//! HTTP/2 and connection settings shared by the HBONE client and server.

use std::time::Duration;

/// Bytes read from an HBONE connection's socket at a time, below TLS.
///
/// rustls reads at most one record (≤ 16 KiB) per call, so without a buffer
/// underneath every record costs a system call (and the kernel's receive
/// bookkeeping with it); a 64 KiB buffer takes four or more records per
/// call for one extra user-space copy, which is cheaper. Held once per
/// HBONE connection, not per tunnel.
pub(crate) const TLS_READ_BUFFER: usize = 64 * 1024;

/// HTTP/2 tuning for HBONE connections.
///
/// The defaults are chosen for bulk throughput between nodes of one cluster
/// with memory bounded per connection:
/// - `stream_window` 1 MiB: one stream fills 8 Gbit/s at a 1 ms round trip
///   (bandwidth × delay) without waiting for WINDOW_UPDATEs; h2's 64 KiB
///   default caps a stream at ~60 MB/s there.
/// - `connection_window` 2 MiB: two streams at full speed before the shared
///   window throttles them; it is also the most a peer can make us buffer
///   for one connection when our applications read slowly. A single stream
///   is bound by its own window, so this only matters for several; the pool
///   opens another connection every 32 streams (`PoolConfig`), so 64 busy
///   streams to one destination get two connections (two tasks, two cores)
///   holding the 4 MiB one connection used to.
/// - `max_frame_size` 64 KiB: four TLS records. Our own frames are at most
///   that (see [`crate::splice`]); a larger limit only lets a peer make us
///   allocate larger frame buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// Initial flow-control window of each stream, bytes.
    pub stream_window: u32,
    /// Initial flow-control window of the whole connection, bytes.
    pub connection_window: u32,
    /// Largest DATA frame we accept, bytes (16 KiB ..= 16 MiB − 1).
    pub max_frame_size: u32,
    /// Streams a server allows at once on one connection.
    pub max_concurrent_streams: u32,
    /// How often to ping an otherwise quiet connection.
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before closing the connection.
    pub keepalive_timeout: Duration,
    /// Limit on the TLS and HTTP/2 handshakes together.
    pub handshake_timeout: Duration,
    /// Handshakes a server runs at once; connections past it are closed at
    /// once (logged and counted), so a flood of connections that never
    /// finish their handshake holds at most this many.
    pub max_pending_handshakes: usize,
    /// Hold small writes until the end of the connection task's turn, so
    /// the frames of many tunnels leave in one TLS record and one `writev`
    /// (`coalesce.rs`). Fewer system calls for many small concurrent
    /// exchanges (the waypoint turns it on); one more scheduler turn per
    /// flush, which raised ztunnel's single-stream request/response p50 by
    /// 40 µs (30%), so off by default.
    pub coalesce_writes: bool,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            stream_window: 1024 * 1024,
            connection_window: 2 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_concurrent_streams: 2048,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            coalesce_writes: false,
        }
    }
}
