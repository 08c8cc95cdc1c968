//! Logging setup: `tracing` to stderr, human-readable, filtered by `log_level` (or `RUST_LOG`
//! when set, for ad-hoc debugging).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Fails on a malformed filter.
pub fn init(log_level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(log_level),
    }
    .map_err(|e| format!("log_level {log_level:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| e.to_string())
}
