//! What every orderflow process shares, whatever it is: a consumer on the runtime, the
//! ingress, the outbox relay, the CLI, the bench.
//!
//! # Owns
//! - [`shutdown_signal`]: SIGINT or SIGTERM.
//! - [`prometheus`]: the process-wide Prometheus recorder and its handle (metric names and
//!   histogram buckets are the same in every binary).
//! - [`ops`]: the operator endpoints `/healthz`, `/readyz`, `/metrics`, with one JSON shape
//!   everywhere; each service says what "ready" means through [`ops::Readiness`].
//! - [`DatabaseArgs`]: `--database-url` / `DATABASE_URL` and its one default,
//!   [`DEFAULT_DATABASE_URL`].
//! - [`auth`]: bearer tokens (`name:token` lists, constant-time checks) and [`auth::Secret`].
//! - [`openapi`]: the OpenAPI description every service serves at `/openapi.json`.
//! - [`consistency`]: the consistency token the ingress answers with and read endpoints wait on.
//!
//! # Must not touch
//! Kafka, events, Postgres connections and consumers: it sits below all of them, so that a
//! producer or a tool can use it without depending on the consumer runtime.

pub mod auth;
pub mod consistency;
pub mod openapi;
pub mod ops;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The local stack's database when `DATABASE_URL` is not set (docs/local-stack.md).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orderflow";

/// The Postgres database a binary works on (flatten into its clap config): a consumer's
/// read store, the checkout database holding the outbox, or the read stores the CLI inspects.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres database URL (the password is never printed).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
}

impl DatabaseArgs {
    pub fn new(database_url: impl Into<String>) -> Self {
        DatabaseArgs { database_url: database_url.into() }
    }
}

impl Default for DatabaseArgs {
    fn default() -> Self {
        DatabaseArgs::new(DEFAULT_DATABASE_URL)
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// The process-wide Prometheus recorder (installed on first use). Every histogram uses the
/// same buckets, from 1 ms to 10 s.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            .expect("static buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests in one process): keep ours for
        // rendering either way.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        database: DatabaseArgs,
    }

    #[test]
    fn the_database_url_flag_overrides_the_one_default() {
        // The environment is the process's, shared by parallel tests: only flags are set here.
        let flags = Flags::parse_from(["t", "--database-url", "postgres://elsewhere/db"]);
        assert_eq!(flags.database.database_url, "postgres://elsewhere/db");
        assert_eq!(DatabaseArgs::default().database_url, DEFAULT_DATABASE_URL);
    }
}
