//! `ip` commands, and running things inside a namespace.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Why a network command failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `ip` failed.
    #[error("ip {args} failed: {stderr}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// `ip` could not run.
    #[error("cannot run ip (is iproute2 installed?)")]
    Spawn(#[source] std::io::Error),
    /// A namespace cannot be entered.
    #[error("cannot enter network namespace {0}")]
    Enter(String),
}

/// Runs `ip args`.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    let output =
        Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(NetError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Deletes a namespace; absent is fine.
pub fn delete_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// Names of existing namespaces starting with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a thread inside namespace `name`.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let file =
        File::open(format!("/var/run/netns/{name}")).map_err(|_| NetError::Enter(name.into()))?;
    let owned = name.to_string();
    std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|_| NetError::Enter(owned))?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetError::Enter(name.into()))?
}

/// Connects to `addr` from inside namespace `name`.
pub fn connect_from(name: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_netns(name, move || TcpStream::connect_timeout(&addr, timeout))
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// `GET path` over HTTP/1.1 from inside a namespace: (status, body).
pub fn http_get(name: &str, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(name, addr, "GET", path)
}

/// `POST path` (no body) over HTTP/1.1 from inside a namespace, e.g. a
/// proxy's `POST /logging?level=...`: (status, body).
pub fn http_post(name: &str, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(name, addr, "POST", path)
}

fn http_request(
    name: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = connect_from(name, addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: local\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The JSON a node's ztunnel serves on its admin port (`127.0.0.1:15000`,
/// inside the node's namespace) at `path`, e.g. `/config_dump`.
pub fn ztunnel_admin_json(node_netns: &str, path: &str) -> std::io::Result<serde_json::Value> {
    let admin = SocketAddr::from(([127, 0, 0, 1], 15000));
    let (status, body) = http_get(node_netns, admin, path)?;
    if status != 200 {
        return Err(std::io::Error::other(format!("ztunnel answered {status} for {path}: {body}")));
    }
    serde_json::from_str(&body)
        .map_err(|e| std::io::Error::other(format!("ztunnel's {path} is not JSON: {e}")))
}
