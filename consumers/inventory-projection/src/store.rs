//! The inventory read store's queries. Writes are batched upserts whose conflict clauses
//! only add or overwrite a fact, so concurrent batches (orders and inventory partitions)
//! never lose each other's updates. Rows go in sorted key order (callers pass `BTreeMap`s)
//! so two batches lock shared rows in the same order and cannot deadlock.

pub use orderflow_consumer_kit::Amounts;
use orderflow_consumer_kit::{Merge, upsert_amounts};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Add stock deltas per (sku, warehouse).
pub async fn add_on_hand(tx: &mut PgConnection, deltas: &Amounts) -> Result<(), sqlx::Error> {
    upsert_amounts(tx, "stock", ["sku", "warehouse", "on_hand"], Merge::Add, deltas).await
}

/// Record what orders asked for per (order id, sku). An order is a fact: a second
/// OrderPlaced of the same order overwrites rather than adds.
pub async fn set_ordered(tx: &mut PgConnection, ordered: &Amounts) -> Result<(), sqlx::Error> {
    upsert_amounts(tx, "order_skus", ["order_id", "sku", "ordered"], Merge::Replace, ordered).await
}

/// Add shipped units per (order id, sku), whether or not the order is known yet.
pub async fn add_shipped(tx: &mut PgConnection, shipped: &Amounts) -> Result<(), sqlx::Error> {
    upsert_amounts(tx, "order_skus", ["order_id", "sku", "shipped"], Merge::Add, shipped).await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WarehouseStock {
    pub warehouse: String,
    pub on_hand: i64,
}

/// The read shape of `GET /v1/inventory/{sku}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkuInventory {
    pub sku: String,
    pub warehouses: Vec<WarehouseStock>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Units the allocator holds for orders, not yet shipped (allocations.v1).
    pub allocated: i64,
    /// Units orders wait for: backordered and not yet covered by stock that arrived.
    pub backordered: i64,
    /// On hand not held for any order: never negative while the allocator runs.
    pub unallocated: i64,
}

/// One sku's stock, or `None` when no event ever mentioned it.
pub async fn sku_inventory(pool: &PgPool, sku: &str) -> Result<Option<SkuInventory>, sqlx::Error> {
    let warehouses: Vec<WarehouseStock> =
        sqlx::query_as("SELECT warehouse, on_hand FROM stock WHERE sku = $1 ORDER BY warehouse")
            .bind(sku)
            .fetch_all(pool)
            .await?;
    let (reserved, allocated, backordered, orders): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(greatest(ordered - shipped, 0)), 0)::bigint,
                COALESCE(sum(greatest(allocated - shipped, 0)), 0)::bigint,
                COALESCE(sum(greatest(backordered - refilled, 0)), 0)::bigint,
                count(*)
         FROM order_skus WHERE sku = $1",
    )
    .bind(sku)
    .fetch_one(pool)
    .await?;
    if warehouses.is_empty() && orders == 0 {
        return Ok(None);
    }
    let on_hand = warehouses.iter().map(|w| w.on_hand).sum();
    Ok(Some(SkuInventory {
        sku: sku.to_owned(),
        warehouses,
        on_hand,
        reserved,
        available: on_hand - reserved,
        allocated,
        backordered,
        unallocated: (on_hand - allocated).max(0),
    }))
}
