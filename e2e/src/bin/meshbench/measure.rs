//! The measurements, each run from inside a client pod's namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(crate) use e2e::stats::{Percentiles, ProcessStats, median, process_stats, reset_peak};

/// Bytes per write in throughput runs.
const CHUNK: usize = 256 * 1024;

/// Runs `f` on a thread inside `netns`, pinned to `cpu` when given.
pub(crate) fn inside<T: Send + 'static>(
    netns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    Ok(localmesh::net::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            crate::pin_current_thread(cpu);
        }
        f()
    })?)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// Writes for `seconds` to a sink; returns bytes per second, counted by the
/// sink (so every byte arrived).
pub(crate) fn throughput(addr: SocketAddr, seconds: f64) -> std::io::Result<(f64, u64)> {
    let mut stream = connect(addr)?;
    let buffer = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    while start.elapsed() < limit {
        stream.write_all(&buffer)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let received = u64::from_be_bytes(count);
    Ok((received as f64 / start.elapsed().as_secs_f64(), received))
}

/// `streams` parallel writers for `seconds`; aggregate bytes per second.
pub(crate) fn parallel_throughput(
    addr: SocketAddr,
    streams: usize,
    seconds: f64,
) -> std::io::Result<f64> {
    let start = Instant::now();
    let workers: Vec<_> =
        (0..streams).map(|_| std::thread::spawn(move || throughput(addr, seconds))).collect();
    let mut total = 0u64;
    for w in workers {
        let (_, bytes) = w.join().map_err(|_| std::io::Error::other("worker panicked"))??;
        total += bytes;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// 64-byte request/response over one connection.
pub(crate) fn rr_persistent(addr: SocketAddr, rounds: usize) -> std::io::Result<Percentiles> {
    let mut stream = connect(addr)?;
    let request = [7u8; 64];
    let mut reply = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        if i >= rounds / 10 {
            samples.push(t.elapsed());
        }
    }
    Ok(Percentiles::of(samples))
}

/// 64-byte request/response on a new TCP connection each time.
pub(crate) fn rr_new_connection(addr: SocketAddr, rounds: usize) -> std::io::Result<Percentiles> {
    let request = [7u8; 64];
    let mut reply = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut stream = connect(addr)?;
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        samples.push(t.elapsed());
    }
    Ok(Percentiles::of(samples))
}
