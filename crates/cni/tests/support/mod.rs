//! Test network namespaces: created with a per-test name, removed on drop
//! (and before creation, if a killed run left one behind).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::fs::File;
use std::process::Command;

pub struct TestNetns(pub String);

impl TestNetns {
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip").args(["netns", "add", name]).status().unwrap().success();
        assert!(ok, "ip netns add {name}");
        Self(name.to_string())
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    pub fn file(&self) -> File {
        File::open(self.path()).unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}
