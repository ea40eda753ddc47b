//! The `inventory-projection` consumer: per sku and warehouse the stock on hand, per sku the
//! units reserved by orders not yet shipped, what is available, and what the allocator decided
//! (units allocated, backordered, unallocated).
//!
//! Reads `orders.v1`, `inventory.v1` and `allocations.v1` through `orderflow-runtime` (effectively once) into
//! the Postgres schema `inventory_projection`, and serves `GET /v1/inventory/{sku}` (port 8084).
//!
//! # Layout
//! [`CONSUMER`] (what the registry knows), [`handler`] (what an event does), [`store`] (queries), [`api`] (reads).
//!
//! # Order-insensitive
//! On hand is a sum of deltas; per (order, sku) the ordered quantity is set by the order and
//! the shipped quantity summed from shipments, and reserved = Σ max(ordered − shipped, 0) is
//! computed when read. A shipment that arrives before its order gives the same final state.
//!
//! Must not touch other consumers' schemas or any Kafka plumbing (that is the runtime's).

pub mod api;
pub mod handler;
pub mod store;

use handler::{InventoryProjection, NAME};
use orderflow_consumer_kit::{Consumer, Spec, bare};
use orderflow_events::{ALLOCATIONS_TOPIC, INVENTORY_TOPIC, ORDERS_TOPIC};
use orderflow_runtime::RuntimeArgs;

/// The consumer as the registry (`crates/registry`) and its binary know it.
pub const CONSUMER: Spec = Spec {
    name: NAME,
    binary: "inventory-projection",
    port: 8084,
    topics: &[ORDERS_TOPIC, INVENTORY_TOPIC, ALLOCATIONS_TOPIC],
    about: "Stock on hand, reserved, available and allocated per sku, from orders.v1, inventory.v1 and allocations.v1",
    secrets: &[],
    rebuild: bare::<InventoryProjection>,
    api: api::router,
    reads: handler::READS,
};

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(runtime: RuntimeArgs) -> anyhow::Result<Consumer<InventoryProjection>> {
    Consumer::connect(InventoryProjection, runtime, api::router).await
}
