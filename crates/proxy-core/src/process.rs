//! What every proxy binary does around its application: reads addresses
//! from flags, sets up logging with a filter the admin endpoint can change,
//! and waits for the signal to stop.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::{prelude::*, reload};

use crate::admin::SetLogLevel;

/// An address from a flag: `ip:port`, or a `host:port` that resolves.
pub fn resolve_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    value
        .to_socket_addrs()
        .map_err(|e| format!("not an address or resolvable host:port ({e})"))?
        .next()
        .ok_or_else(|| "resolves to no address".into())
}

/// The log filter: `level` and `target=level` directives (tracing's
/// `Targets`; no span or field filters, which would link a regex engine —
/// ~0.3 MB of code, all resident in a node proxy).
pub fn parse_log_filter(value: &str) -> Result<Targets, String> {
    value.parse::<Targets>().map_err(|e| {
        format!("{e} (expected a level or target=level, comma-separated, e.g. info,hbone=debug)")
    })
}

/// Logs to stderr through `filter`, and returns the switch the admin
/// endpoint's `POST /logging?level=` uses to change it.
pub fn init_logging(filter: Targets) -> SetLogLevel {
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    Box::new(move |level: &str| {
        let filter = parse_log_filter(level)?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Returns on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn log_filters_take_levels_and_targets_and_name_what_is_wrong() {
        for good in ["info", "warn,hbone=debug", "ztunnel::outbound=trace,h2=off"] {
            assert!(parse_log_filter(good).is_ok(), "{good}");
        }
        let err = parse_log_filter("info,hbone=loud").unwrap_err();
        assert!(err.contains("target=level"), "{err}");
    }

    #[test]
    fn addresses_are_parsed_or_resolved_or_named_as_wrong() {
        assert_eq!(resolve_addr("127.0.0.1:15000").unwrap(), "127.0.0.1:15000".parse().unwrap());
        assert_eq!(resolve_addr("localhost:80").unwrap().port(), 80);
        assert!(resolve_addr("no port").is_err());
    }
}
