//! Logging and tracing setup shared by every orderflow binary.
//!
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json|pretty` chooses the output, and
//! without it logs are pretty on a terminal and JSON otherwise (production, CI, log files).
//! Logs go to stderr so that commands whose stdout is data (`orderflow tail`) stay clean.
//!
//! This crate owns the subscriber; binaries call [`init`] once, libraries only emit.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
}

impl Format {
    /// `LOG_FORMAT` if set to a known value, else pretty on a terminal and JSON otherwise.
    pub fn from_env() -> Format {
        match std::env::var("LOG_FORMAT").ok().as_deref() {
            Some("json") => Format::Json,
            Some("pretty") | Some("text") => Format::Pretty,
            _ if std::io::stderr().is_terminal() => Format::Pretty,
            _ => Format::Json,
        }
    }
}

/// Install the global subscriber for `service`. Safe to call twice (the second call is a
/// no-op), so tests and binaries can share setup code.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match Format::from_env() {
        Format::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        Format::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_span_events(FmtSpan::NONE)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
