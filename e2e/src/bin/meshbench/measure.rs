//! The measurements, each run from inside a client pod's namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bytes per write in throughput runs.
const CHUNK: usize = 256 * 1024;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99) }
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

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

/// A process's resident memory now and at its peak (KiB), the anonymous
/// (private heap and stacks) part of it, and CPU seconds in user space and
/// in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessStats {
    pub(crate) rss_kib: u64,
    pub(crate) anon_kib: u64,
    pub(crate) peak_kib: u64,
    pub(crate) user_seconds: f64,
    pub(crate) kernel_seconds: f64,
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so the next
/// reading is the peak of what follows (root; `proc(5)`, `clear_refs`).
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

pub(crate) fn process_stats(pid: u32) -> ProcessStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat: indexes 11 and 12 after ')'.
    let per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    ProcessStats {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        peak_kib: field("VmHWM:"),
        user_seconds: ticks(11) as f64 / per_second,
        kernel_seconds: ticks(12) as f64 / per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_no_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
