//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`, with PostgreSQL's notices, such as "relation already
//! exists, skipping" at every migration check, left out). Text is coloured
//! only on a terminal, and never with `NO_COLOR` set.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber.
///
/// # Errors
/// If `RUST_LOG` does not parse or a subscriber is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) => EnvFilter::try_new(spec)?,
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}
