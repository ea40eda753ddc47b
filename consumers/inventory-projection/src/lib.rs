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

use anyhow::Context;
pub use config::Config;
use handler::InventoryProjection;
use orderflow_runtime::Runtime;

/// Consume and serve on `config.listen` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.listen))?;
    connect(config).await?.serve(listener, shutdown).await
}

/// Connect the store (schema, migrations) and build the read API, without consuming yet.
pub async fn connect(config: Config) -> anyhow::Result<Connected> {
    let runtime = Runtime::connect(&InventoryProjection, config.runtime).await?;
    let api = api::router(runtime.pool().clone());
    Ok(Connected { runtime, api })
}

/// A consumer whose store is ready; [`Connected::serve`] consumes and serves.
pub struct Connected {
    runtime: Runtime,
    api: axum::Router,
}

impl Connected {
    /// Consume and serve on `listener` (tests bind port 0) until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.runtime
            .run_with_listener(InventoryProjection, self.api, listener, shutdown)
            .await
    }
}
