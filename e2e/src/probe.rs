//! One connection's first byte, timed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Connects to `addr` from inside `netns`, sends one byte and waits for its
/// echo; the time from before the connect to the echo. Every step is
/// bounded (5 s), so a path that accepts but never answers is an error,
/// not a hang.
pub fn first_byte(netns: &str, addr: SocketAddr) -> std::io::Result<Duration> {
    let t = Instant::now();
    let mut stream = localmesh::net::connect_from(netns, addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"x")?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b)?;
    if b != *b"x" {
        return Err(std::io::Error::other(format!("{addr} echoed {b:?}, not the byte sent")));
    }
    Ok(t.elapsed())
}
