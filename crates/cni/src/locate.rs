//! Finding a pod's network namespace: the path the pod names (local mesh),
//! the path the CNI plugin reported, or a scan of `/proc` for the namespace
//! holding the pod's IP (pods that started before the agent).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sched::{CloneFlags, setns};

use crate::desired::CapturedPod;

/// Known namespace paths by pod uid, as reported by the CNI plugin.
#[derive(Debug, Default)]
pub struct NetnsCache(Mutex<HashMap<String, PathBuf>>);

impl NetnsCache {
    /// Remembers where a pod's namespace is.
    pub fn insert(&self, uid: &str, path: PathBuf) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), path);
    }

    /// Forgets a pod.
    pub fn remove(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Where the plugin said the pod's namespace is.
    pub fn get(&self, uid: &str) -> Option<PathBuf> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(uid).cloned()
    }
}

/// Why a namespace was not found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The named file cannot be opened.
    #[error("cannot open network namespace {path}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No namespace holds the pod's address.
    #[error("no network namespace on this node holds {0:?}")]
    NotFound(Vec<IpAddr>),
}

/// Opens the pod's namespace.
pub fn locate(pod: &CapturedPod, cache: &NetnsCache) -> Result<File, LocateError> {
    locate_at(pod, pod.netns.clone().or_else(|| cache.get(&pod.uid)))
}

/// Like [`locate`], with the path already looked up (`known`): for a
/// blocking thread, which cannot borrow the cache.
pub fn locate_at(pod: &CapturedPod, known: Option<PathBuf>) -> Result<File, LocateError> {
    if let Some(path) = known {
        return File::open(&path).map_err(|source| LocateError::Open { path, source });
    }
    scan_proc(Path::new("/proc"), &pod.ips)?.ok_or_else(|| LocateError::NotFound(pod.ips.clone()))
}

/// Looks through every process's namespace for one with an interface
/// holding one of `ips`.
fn scan_proc(proc: &Path, ips: &[IpAddr]) -> Result<Option<File>, LocateError> {
    let entries = std::fs::read_dir(proc)
        .map_err(|source| LocateError::Open { path: proc.to_path_buf(), source })?;
    let mut seen = HashSet::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let path = entry.path().join("ns/net");
        let Ok(file) = File::open(&path) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if holds_any(&file, ips) {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

fn holds_any(netns: &File, ips: &[IpAddr]) -> bool {
    let Ok(netns) = netns.try_clone() else { return false };
    let ips = ips.to_vec();
    std::thread::spawn(move || {
        if setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
            return false;
        }
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return false };
        addrs.into_iter().any(|a| {
            let ip = a.address.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            ip.is_some_and(|ip| ips.contains(&ip))
        })
    })
    .join()
    .unwrap_or(false)
}
