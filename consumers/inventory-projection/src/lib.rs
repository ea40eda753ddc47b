//! The `inventory-projection` consumer: per sku and warehouse the stock on hand, per sku the
//! units reserved by orders not yet shipped, and what is available.
//!
//! Reads `orders.v1` and `inventory.v1` through `orderflow-runtime` (effectively once) into
//! the Postgres schema `inventory_projection`, and serves `GET /v1/inventory/{sku}` (port 8084).
//!
//! # Layout
//! [`config`] (flags), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! On hand is a sum of deltas; per (order, sku) the ordered quantity is set by the order and
//! the shipped quantity summed from shipments, and reserved = Σ max(ordered − shipped, 0) is
//! computed when read. A shipment that arrives before its order gives the same final state.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod config;
pub mod handler;
pub mod store;

use std::future::Future;

pub use config::Config;
use handler::InventoryProjection;
use orderflow_consumer_kit::Consumer;
use orderflow_runtime::RuntimeArgs;

/// Consume and serve on `config.listen` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    connect(config.runtime).await?.run(config.listen, shutdown).await
}

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<InventoryProjection>> {
    Consumer::connect(InventoryProjection, runtime, api::router).await
}
