//! The `analytics` consumer: orders and revenue per hour per currency (by `placed_at`),
//! units sold per sku per day, and stock movements per day per reason.
//!
//! Reads `orders.v1` and `inventory.v1` through `orderflow-runtime` (effectively once) into
//! the Postgres schema `analytics`, and serves `GET /v1/sales` (JSON or CSV), `GET /v1/units`
//! and `GET /v1/stock-movements` (port 8083).
//!
//! # Layout
//! [`config`] (flags), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! Every table is a sum keyed by the event's own time bucket (never the arrival time), so
//! any interleaving of the topics, or a rebuild, gives the same numbers.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod config;
pub mod handler;
pub mod store;

use std::future::Future;

pub use config::Config;
use handler::Analytics;
use orderflow_consumer_kit::Consumer;
use orderflow_runtime::RuntimeArgs;

/// Consume and serve on `config.listen` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    connect(config.runtime).await?.run(config.listen, shutdown).await
}

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<Analytics>> {
    Consumer::connect(Analytics, runtime, api::router).await
}
