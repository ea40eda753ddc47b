//! The inventory read store's queries. Writes are batched upserts whose conflict clauses
//! only add or overwrite a fact, so concurrent batches (orders and inventory partitions)
//! never lose each other's updates. Rows go in sorted key order (callers pass `BTreeMap`s)
//! so two batches lock shared rows in the same order and cannot deadlock.

pub use orderflow_consumer_kit::Amounts;
use orderflow_consumer_kit::amount_columns;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Add stock deltas per (sku, warehouse).
pub async fn add_on_hand(tx: &mut PgConnection, deltas: &Amounts) -> Result<(), sqlx::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let (skus, warehouses, amounts) = amount_columns(deltas);
    sqlx::query(
        "INSERT INTO stock (sku, warehouse, on_hand)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = stock.on_hand + EXCLUDED.on_hand",
    )
    .bind(skus)
    .bind(warehouses)
    .bind(amounts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Record what orders asked for per (order id, sku). An order is a fact: a second
/// OrderPlaced of the same order overwrites rather than adds.
pub async fn set_ordered(tx: &mut PgConnection, ordered: &Amounts) -> Result<(), sqlx::Error> {
    if ordered.is_empty() {
        return Ok(());
    }
    let (orders, skus, amounts) = amount_columns(ordered);
    sqlx::query(
        "INSERT INTO order_skus (order_id, sku, ordered)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (order_id, sku) DO UPDATE SET ordered = EXCLUDED.ordered",
    )
    .bind(orders)
    .bind(skus)
    .bind(amounts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Add shipped units per (order id, sku), whether or not the order is known yet.
pub async fn add_shipped(tx: &mut PgConnection, shipped: &Amounts) -> Result<(), sqlx::Error> {
    if shipped.is_empty() {
        return Ok(());
    }
    let (orders, skus, amounts) = amount_columns(shipped);
    sqlx::query(
        "INSERT INTO order_skus (order_id, sku, shipped)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (order_id, sku) DO UPDATE SET shipped = order_skus.shipped + EXCLUDED.shipped",
    )
    .bind(orders)
    .bind(skus)
    .bind(amounts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct WarehouseStock {
    pub warehouse: String,
    pub on_hand: i64,
}

/// The read shape of `GET /v1/inventory/{sku}`.
#[derive(Debug, Serialize)]
pub struct SkuInventory {
    pub sku: String,
    pub warehouses: Vec<WarehouseStock>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// One sku's stock, or `None` when no event ever mentioned it.
pub async fn sku_inventory(pool: &PgPool, sku: &str) -> Result<Option<SkuInventory>, sqlx::Error> {
    let warehouses: Vec<WarehouseStock> =
        sqlx::query_as("SELECT warehouse, on_hand FROM stock WHERE sku = $1 ORDER BY warehouse")
            .bind(sku)
            .fetch_all(pool)
            .await?;
    let (reserved, orders): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(greatest(ordered - shipped, 0)), 0)::bigint, count(*) FROM order_skus WHERE sku = $1",
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
    }))
}
