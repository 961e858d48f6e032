//! Network namespaces for tests, named `<prefix>-<pid>`: removed on drop
//! (also when the test panics), and leftovers of killed runs (whose pid is
//! gone) removed when the next one is made.

use std::fs::File;
use std::process::{Command, Stdio};

/// A network namespace under `/var/run/netns`.
pub struct TestNetns(pub String);

impl TestNetns {
    /// Creates `<prefix>-<our pid>` with loopback up, after sweeping
    /// `<prefix>-<pid>` namespaces of processes that no longer exist.
    pub fn new(prefix: &str) -> Self {
        sweep(prefix);
        let name = format!("{prefix}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap().success();
        assert!(ok, "ip netns add {name}");
        let ok = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "lo up in {name}");
        Self(name)
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// The namespace file, opened.
    pub fn file(&self) -> File {
        File::open(self.path()).unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Whether we may create namespaces.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:").map(|u| u.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false)
}

fn sweep(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&format!("{prefix}-")) else { continue };
        if pid.chars().all(|c| c.is_ascii_digit())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}
