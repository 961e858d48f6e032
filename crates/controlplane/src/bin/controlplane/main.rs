//! The `controlplane` binary: flags, logging, runtime, then `server::run`.

mod config;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = match config::Flags::parse().validate() {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("controlplane: invalid configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding --grpc-addr {}", config.grpc_addr))?;
        let plaintext = match config.plaintext_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding --plaintext-addr {addr}"))?,
            ),
            None => None,
        };
        let admin = match config.admin_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding --admin-addr {addr}"))?,
            ),
            None => None,
        };
        // One line on stdout with the bound addresses, for tools and tests
        // that ask for port 0.
        let addr_of = |l: &Option<tokio::net::TcpListener>| {
            l.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default()
        };
        println!(
            "listening grpc={} plaintext={} admin={}",
            grpc.local_addr()?,
            addr_of(&plaintext),
            addr_of(&admin)
        );
        let source = match config.config_dir {
            Some(dir) => {
                controlplane::server::Source::Directory { dir, poll: config.poll_interval }
            }
            None => controlplane::server::Source::Kubernetes(
                kube::Client::try_default().await.context("connecting to the Kubernetes API")?,
            ),
        };
        let settings = controlplane::server::Settings {
            source,
            ca_dir: config.ca_dir,
            mesh: config.mesh,
            identity: config.identity,
            grpc,
            plaintext,
            bootstrap_tokens: config.bootstrap_tokens,
            node_proxy_account: config.node_proxy_account,
            admin,
            serving_names: config.serving_names,
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        controlplane::server::run(settings, shutdown).await.context("control plane failed")
    })
}
