//! The `order-history` consumer: every customer's orders, newest first.
//!
//! Reads `orders.v1` through `orderflow-runtime` (effectively once) into the Postgres schema
//! `order_history`, and serves `GET /v1/customers/{customer_id}/orders?limit=` (port 8087).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`handler`] (what an event does), [`store`]
//! (queries), [`api`] (reads), `migrations/`.
//!
//! # Order-insensitive
//! One row per order id, set from its OrderPlaced: a duplicate event never reaches the
//! handler (the runtime's ledger), and an order re-published under a new event id overwrites
//! its own row. Orders of one customer on different partitions may be applied in any order;
//! the newest-first order is `placed_at`'s, computed when read.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod handler;
pub mod store;

use handler::{NAME, OrderHistory};
use orderflow_consumer_kit::{Consumer, Spec, bare};
use orderflow_events::ORDERS_TOPIC;
use orderflow_runtime::RuntimeArgs;

/// The consumer as the registry (`crates/registry`) and its binary know it.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "order-history",
    port: 8087,
    topics: &[ORDERS_TOPIC],
    about: "Every customer's orders, newest first, from orders.v1",
    secrets: &[],
    rebuild: bare::<OrderHistory>,
    api: api::router,
    reads: handler::READS,
};

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<OrderHistory>> {
    Consumer::connect(OrderHistory, runtime, api::router).await
}
