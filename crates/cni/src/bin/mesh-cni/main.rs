//! `mesh-cni`: the CNI plugin when a container runtime runs it (it sets
//! `CNI_COMMAND`), the node agent otherwise (`mesh-cni agent ...`).

mod config;

use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CNI_COMMAND").is_some() {
        return plugin();
    }
    let (settings, process) = match config::Flags::parse().validate() {
        Ok(valid) => valid,
        Err(problems) => {
            eprintln!("mesh-cni: invalid configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&process.log).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime
        .block_on(config::run(settings, process, CancellationToken::new()))
        .context("node agent failed")
}

/// One plugin invocation: environment and stdin in, result on stdout.
fn plugin() -> anyhow::Result<()> {
    let env = cni::plugin::PluginEnv {
        command: std::env::var("CNI_COMMAND").ok(),
        netns: std::env::var("CNI_NETNS").ok(),
        args: std::env::var("CNI_ARGS").ok(),
    };
    let mut stdin = String::new();
    // An unreadable stdin is reported by `run` as bad configuration.
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let outcome = cni::plugin::run(&env, &stdin, cni::plugin::ask_agent);
    print!("{}", outcome.stdout);
    std::process::exit(outcome.code)
}
