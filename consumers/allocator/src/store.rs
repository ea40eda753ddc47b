//! The allocator's queries. Every statement binds its data; table names are constants.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::decide::Bin;

/// First key of the allocator's advisory locks (`orderflow_consumer_kit::lock_keys`), so its
/// per-sku locks never meet another user's: "allo" in ASCII.
pub const LOCK_CLASS: i32 = 0x616c_6c6f;

/// Every warehouse's stock of `skus`.
pub async fn stock(tx: &mut PgConnection, skus: &BTreeSet<String>) -> Result<HashMap<String, Vec<Bin>>, sqlx::Error> {
    let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
    let rows =
        sqlx::query("SELECT sku, warehouse, on_hand, allocated FROM stock WHERE sku = ANY($1) ORDER BY sku, warehouse")
            .bind(&skus)
            .fetch_all(&mut *tx)
            .await?;
    let mut stock: HashMap<String, Vec<Bin>> = HashMap::new();
    for row in rows {
        stock.entry(row.get("sku")).or_default().push(Bin {
            warehouse: row.get("warehouse"),
            on_hand: row.get("on_hand"),
            allocated: row.get("allocated"),
        });
    }
    Ok(stock)
}

/// Write back the stock of `skus` as it is in `stock`.
pub async fn save_stock(
    tx: &mut PgConnection,
    stock: &HashMap<String, Vec<Bin>>,
    skus: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    let (mut sku, mut warehouse, mut on_hand, mut allocated) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in skus {
        for bin in stock.get(s).into_iter().flatten() {
            sku.push(s.as_str());
            warehouse.push(bin.warehouse.as_str());
            on_hand.push(bin.on_hand);
            allocated.push(bin.allocated);
        }
    }
    if sku.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO stock (sku, warehouse, on_hand, allocated)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
         ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = EXCLUDED.on_hand, allocated = EXCLUDED.allocated",
    )
    .bind(&sku)
    .bind(&warehouse)
    .bind(&on_hand)
    .bind(&allocated)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Which of `order_ids` were decided before.
pub async fn decided(tx: &mut PgConnection, order_ids: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT order_id FROM decided_orders WHERE order_id = ANY($1)")
        .bind(order_ids)
        .fetch_all(&mut *tx)
        .await
        .map(|ids| ids.into_iter().collect())
}

/// An order decided in this batch.
pub struct DecidedOrder {
    pub order_id: String,
    pub order_event_id: Uuid,
    pub placed_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
}

pub async fn insert_decided(tx: &mut PgConnection, orders: &[DecidedOrder]) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO decided_orders (order_id, order_event_id, placed_at, decided_at)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])",
    )
    .bind(orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.order_event_id).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.placed_at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.decided_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One allocated part: `quantity` of `sku` from `warehouse` for `order_id`, by `event_id`.
pub struct AllocationRow {
    pub order_id: String,
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    pub event_id: Uuid,
    pub decided_at: DateTime<Utc>,
}

pub async fn insert_allocations(tx: &mut PgConnection, rows: &[AllocationRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO allocations (order_id, sku, warehouse, quantity, event_id, decided_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::timestamptz[])",
    )
    .bind(rows.iter().map(|r| r.order_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.warehouse.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.quantity).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.decided_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Skus among `skus` with lines waiting for stock.
pub async fn queued_skus(tx: &mut PgConnection, skus: &BTreeSet<String>) -> Result<HashSet<String>, sqlx::Error> {
    let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
    sqlx::query_scalar("SELECT DISTINCT sku FROM backorders WHERE sku = ANY($1)")
        .bind(&skus)
        .fetch_all(&mut *tx)
        .await
        .map(|s| s.into_iter().collect())
}

/// A line waiting for stock.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub order_id: String,
    pub sku: String,
    pub quantity_missing: i64,
    pub placed_at: DateTime<Utc>,
    pub traceparent: Option<String>,
}

/// `sku`'s queue, first placed first (ties by order id).
pub async fn queue(tx: &mut PgConnection, sku: &str) -> Result<Vec<Waiting>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT order_id, quantity_missing, placed_at, traceparent FROM backorders
         WHERE sku = $1 ORDER BY placed_at, order_id",
    )
    .bind(sku)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Waiting {
            order_id: row.get("order_id"),
            sku: sku.to_owned(),
            quantity_missing: row.get("quantity_missing"),
            placed_at: row.get("placed_at"),
            traceparent: row.get("traceparent"),
        })
        .collect())
}

/// Add new waiting lines, and set (or with `None` remove) the missing quantity of lines that
/// stock covered in part (in full).
pub async fn save_backorders(
    tx: &mut PgConnection,
    new: &[Waiting],
    covered: &BTreeMap<(String, String), Option<i64>>,
) -> Result<(), sqlx::Error> {
    if !new.is_empty() {
        sqlx::query(
            "INSERT INTO backorders (order_id, sku, quantity_missing, placed_at, traceparent)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[])",
        )
        .bind(new.iter().map(|w| w.order_id.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|w| w.sku.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|w| w.quantity_missing).collect::<Vec<_>>())
        .bind(new.iter().map(|w| w.placed_at).collect::<Vec<_>>())
        .bind(new.iter().map(|w| w.traceparent.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let (gone, left): (Vec<_>, Vec<_>) = covered.iter().partition(|(_, missing)| missing.is_none());
    if !gone.is_empty() {
        sqlx::query(
            "DELETE FROM backorders b USING UNNEST($1::text[], $2::text[]) AS g(order_id, sku)
             WHERE b.order_id = g.order_id AND b.sku = g.sku",
        )
        .bind(gone.iter().map(|((o, _), _)| o.as_str()).collect::<Vec<_>>())
        .bind(gone.iter().map(|((_, s), _)| s.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !left.is_empty() {
        sqlx::query(
            "UPDATE backorders b SET quantity_missing = l.missing
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS l(order_id, sku, missing)
             WHERE b.order_id = l.order_id AND b.sku = l.sku",
        )
        .bind(left.iter().map(|((o, _), _)| o.as_str()).collect::<Vec<_>>())
        .bind(left.iter().map(|((_, s), _)| s.as_str()).collect::<Vec<_>>())
        .bind(left.iter().map(|(_, m)| m.unwrap_or_default()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One sku's stock in one warehouse, as the read API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WarehouseStock {
    pub warehouse: String,
    pub on_hand: i64,
    /// Held for decided orders, not yet shipped.
    pub allocated: i64,
    /// On hand and not allocated.
    pub available: i64,
}

/// One sku's stock as `GET /v1/stock/{sku}` shows it (zeros for a sku never seen).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkuStock {
    pub sku: String,
    pub on_hand: i64,
    pub allocated: i64,
    pub available: i64,
    /// Units orders still wait for.
    pub backordered: i64,
    pub warehouses: Vec<WarehouseStock>,
}

/// Units of a sku reserved in a warehouse for an order.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Allocated {
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
}

/// Units of a sku an order still waits for.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Backordered {
    pub sku: String,
    pub quantity_missing: i64,
}

/// One order's decision as `GET /v1/allocations/{order_id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderDecision {
    pub order_id: String,
    pub placed_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    /// What was reserved, per sku and warehouse (at the decision and since, from later stock).
    pub allocated: Vec<Allocated>,
    /// What the order still waits for.
    pub backordered: Vec<Backordered>,
}

/// One sku's stock as the read API shows it.
pub async fn sku_stock(pool: &PgPool, sku: &str) -> Result<SkuStock, sqlx::Error> {
    let rows = sqlx::query("SELECT warehouse, on_hand, allocated FROM stock WHERE sku = $1 ORDER BY warehouse")
        .bind(sku)
        .fetch_all(pool)
        .await?;
    let backordered: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(quantity_missing), 0)::bigint FROM backorders WHERE sku = $1")
            .bind(sku)
            .fetch_one(pool)
            .await?;
    let (mut on_hand, mut allocated, mut available) = (0i64, 0i64, 0i64);
    let warehouses = rows
        .iter()
        .map(|row| {
            let bin =
                Bin { warehouse: row.get("warehouse"), on_hand: row.get("on_hand"), allocated: row.get("allocated") };
            on_hand += bin.on_hand;
            allocated += bin.allocated;
            available += bin.free();
            WarehouseStock {
                available: bin.free(),
                warehouse: bin.warehouse,
                on_hand: bin.on_hand,
                allocated: bin.allocated,
            }
        })
        .collect();
    Ok(SkuStock { sku: sku.to_owned(), on_hand, allocated, available, backordered, warehouses })
}

/// One order's decision as the read API shows it; `None` when it was not decided.
pub async fn order_decision(pool: &PgPool, order_id: &str) -> Result<Option<OrderDecision>, sqlx::Error> {
    let Some(order) = sqlx::query("SELECT placed_at, decided_at FROM decided_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let allocated = sqlx::query_as::<_, Allocated>(
        "SELECT sku, warehouse, SUM(quantity)::bigint AS quantity FROM allocations WHERE order_id = $1
         GROUP BY sku, warehouse ORDER BY sku, warehouse",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    let backordered = sqlx::query_as::<_, Backordered>(
        "SELECT sku, quantity_missing FROM backorders WHERE order_id = $1 ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(OrderDecision {
        order_id: order_id.to_owned(),
        placed_at: order.get("placed_at"),
        decided_at: order.get("decided_at"),
        allocated,
        backordered,
    }))
}
