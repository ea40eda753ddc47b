//! The `fulfillment` consumer: one fulfillment per order with its lines, and its status
//! (`pending`, `partially_shipped`, `shipped`) as shipments cover the lines.
//!
//! Reads `orders.v1`, `inventory.v1` (only `shipped` changes that name an order) and
//! `allocations.v1` (what the allocator decided per line) through
//! `orderflow-runtime` (effectively once) into the Postgres schema `fulfillment`, and serves
//! `GET /v1/fulfillments/{order_id}` (port 8081).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! Shipments are summed per (order, sku) in their own table, with no reference to the order,
//! so one applied before its order is kept; lines and shipments are joined, and the status
//! derived, when read. Either arrival order gives the same answer.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod handler;
pub mod store;

use handler::{Fulfillment, NAME};
use orderflow_consumer_kit::{Consumer, Spec, bare};
use orderflow_events::{ALLOCATIONS_TOPIC, INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_runtime::RuntimeArgs;

/// The consumer as the registry (`crates/registry`) and its binary know it.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "fulfillment",
    port: 8081,
    topics: &[ORDERS_TOPIC, INVENTORY_TOPIC, ALLOCATIONS_TOPIC],
    about: "One fulfillment per order, its shipment status and what was allocated or backordered per line, from orders.v1, inventory.v1 and allocations.v1",
    secrets: &[],
    rebuild: bare::<Fulfillment>,
    api: api::router,
    reads: handler::READS,
};

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<Fulfillment>> {
    Consumer::connect(Fulfillment, runtime, api::router).await
}
