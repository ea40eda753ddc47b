//! The `analytics` consumer: orders and revenue per hour per currency (by `placed_at`),
//! units sold per sku per day, and stock movements per day per reason.
//!
//! Reads `orders.v1` and `inventory.v1` through `orderflow-runtime` (effectively once) into
//! the Postgres schema `analytics`, and serves `GET /v1/sales` (JSON or CSV), `GET /v1/units`
//! and `GET /v1/stock-movements` (port 8083).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! Every table is a sum keyed by the event's own time bucket (never the arrival time), so
//! any interleaving of the topics, or a rebuild, gives the same numbers.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod handler;
pub mod store;

use handler::{Analytics, NAME};
use orderflow_consumer_kit::{Consumer, Spec, bare};
use orderflow_events::{INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_runtime::RuntimeArgs;

/// The consumer as the registry (`crates/registry`) and its binary know it.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "analytics",
    port: 8083,
    topics: &[ORDERS_TOPIC, INVENTORY_TOPIC],
    about: "Sales per hour and currency, units per sku and day, stock movements per day and reason",
    secrets: &[],
    rebuild: bare::<Analytics>,
    api: api::router,
    reads: handler::READS,
};

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<Analytics>> {
    Consumer::connect(Analytics, runtime, api::router).await
}
