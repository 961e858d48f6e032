//! The `ztunnel` binary: flags, logging, runtime, then `ztunnel::app::run`.

mod config;
mod pow;
mod trim;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let flags = config::Flags::parse();
    let (config, addrs) = match flags.validate() {
        Ok(valid) => valid,
        Err(problems) => {
            eprintln!("ztunnel: invalid configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    let set_log_level = proxy_core::process::init_logging(addrs.log);
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
                proxy_core::process::wait_for_signal().await;
                shutdown.cancel();
            }
        });
        ztunnel::app::run(config, listeners, Some(set_log_level), shutdown)
            .await
            .context("ztunnel failed")
    })
}
