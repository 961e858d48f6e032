//! The `ztunnel` binary: flags, logging, runtime, then `ztunnel::app::run`.

mod config;
mod pow;
mod trim;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{prelude::*, reload};

fn main() -> anyhow::Result<()> {
    let flags = config::Flags::parse();
    let (config, addrs) = match flags.validate() {
        Ok(valid) => valid,
        Err(problems) => {
            eprintln!("ztunnel: invalid configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    let (filter, reload_handle) = reload::Layer::new(addrs.log);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let set_log_level: ztunnel::admin::SetLogLevel = Box::new(move |level: &str| {
        let filter = config::parse_log_filter(level)?;
        reload_handle.reload(filter).map_err(|e| e.to_string())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(addrs.worker_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bind = |addr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {what} {addr}"))
        };
        let listeners = ztunnel::app::AppListeners {
            admin: bind(addrs.admin, "--admin-addr").await?,
            metrics: bind(addrs.metrics, "--metrics-addr").await?,
            readiness: bind(addrs.readiness, "--readiness-addr").await?,
        };
        println!(
            "listening admin={} metrics={} readiness={}",
            listeners.admin.local_addr()?,
            listeners.metrics.local_addr()?,
            listeners.readiness.local_addr()?
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(trim::run());
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                shutdown.cancel();
            }
        });
        ztunnel::app::run(config, listeners, Some(set_log_level), shutdown)
            .await
            .context("ztunnel failed")
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
