//! Running commands inside a pod's network namespace.
//!
//! A child process inherits the network namespace of the thread that
//! spawns it, so a short-lived thread enters the namespace (`setns`) and
//! runs the command; the agent's other threads never change namespace.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};

/// Why a command in a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Entering the namespace failed.
    #[error("cannot enter the pod's network namespace")]
    Enter(#[source] nix::Error),
    /// The command could not be started (not installed?).
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The worker thread died.
    #[error("the namespace worker thread panicked")]
    Thread,
}

/// Runs `program args` inside `netns`, feeding `stdin`; returns stdout.
pub fn run_in(
    netns: &File,
    program: &str,
    args: &[&str],
    stdin: &str,
) -> Result<String, ExecError> {
    let netns =
        netns.try_clone().map_err(|source| ExecError::Spawn { program: program.into(), source })?;
    let program = program.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_string();
    std::thread::spawn(move || {
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(ExecError::Enter)?;
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn { program: program.clone(), source })?;
        if let Some(mut input) = child.stdin.take() {
            // A failed write shows up as the command's own error.
            let _ = input.write_all(stdin.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| ExecError::Spawn { program: program.clone(), source })?;
        if !output.status.success() {
            return Err(ExecError::Failed {
                program: format!("{program} {}", args.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .join()
    .map_err(|_| ExecError::Thread)?
}
