//! The `fulfillment` consumer: one fulfillment per order with its lines, and its status
//! (`pending`, `partially_shipped`, `shipped`) as shipments cover the lines.
//!
//! Reads `orders.v1` and `inventory.v1` (only `shipped` changes that name an order) through
//! `orderflow-runtime` (effectively once) into the Postgres schema `fulfillment`, and serves
//! `GET /v1/fulfillments/{order_id}` (port 8081).
//!
//! # Layout
//! [`config`] (flags), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! Shipments are summed per (order, sku) in their own table, with no reference to the order,
//! so one applied before its order is kept; lines and shipments are joined, and the status
//! derived, when read. Either arrival order gives the same answer.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod config;
pub mod handler;
pub mod store;

use std::future::Future;

pub use config::Config;
use handler::Fulfillment;
use orderflow_consumer_kit::Consumer;
use orderflow_runtime::RuntimeArgs;

/// Consume and serve on `config.listen` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    connect(config.runtime).await?.run(config.listen, shutdown).await
}

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<Fulfillment>> {
    Consumer::connect(Fulfillment, runtime, api::router).await
}
