//! The fulfillment read store's queries. Orders are inserted once (a repeated OrderPlaced
//! of the same order overwrites its lines); shipments are summed per (order, sku) whether the
//! order is known yet or not. Rows go in key order so concurrent batches cannot deadlock.

use chrono::{DateTime, Utc};
use orderflow_consumer_kit::{Amounts, Merge, upsert_amounts};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Create the fulfillments of `orders` (order id → placed at) and set their lines
/// ((order id, sku) → quantity).
pub async fn insert_orders(
    tx: &mut PgConnection,
    orders: &std::collections::BTreeMap<String, DateTime<Utc>>,
    lines: &Amounts,
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = orders.keys().map(String::as_str).collect();
    let placed: Vec<DateTime<Utc>> = orders.values().copied().collect();
    sqlx::query(
        "INSERT INTO fulfillments (order_id, placed_at)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[])
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&placed)
    .execute(&mut *tx)
    .await?;
    upsert_amounts(tx, "fulfillment_lines", ["order_id", "sku", "quantity"], Merge::Replace, lines).await
}

/// Add shipped units per (order id, sku).
pub async fn add_shipped(tx: &mut PgConnection, shipped: &Amounts) -> Result<(), sqlx::Error> {
    upsert_amounts(tx, "shipments", ["order_id", "sku", "shipped"], Merge::Add, shipped).await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
    pub shipped: i64,
    /// Units the allocator reserved for this line (allocations.v1), at decision and later.
    pub allocated: i64,
    /// Units of this line still waiting for stock.
    pub backordered: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    PartiallyShipped,
    Shipped,
}

impl Status {
    /// Shipped when every line is covered, partially shipped when anything shipped.
    pub fn of(lines: &[Line]) -> Status {
        if !lines.is_empty() && lines.iter().all(|l| l.shipped >= l.quantity) {
            Status::Shipped
        } else if lines.iter().any(|l| l.shipped > 0) {
            Status::PartiallyShipped
        } else {
            Status::Pending
        }
    }
}

/// The read shape of `GET /v1/fulfillments/{order_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Fulfillment {
    pub order_id: String,
    pub status: Status,
    pub placed_at: DateTime<Utc>,
    pub lines: Vec<Line>,
}

/// One order's fulfillment, or `None` when the order is unknown (even if shipments of it
/// were seen: they count once it arrives).
pub async fn fulfillment(pool: &PgPool, order_id: &str) -> Result<Option<Fulfillment>, sqlx::Error> {
    let Some(placed_at) =
        sqlx::query_scalar::<_, DateTime<Utc>>("SELECT placed_at FROM fulfillments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let lines: Vec<Line> = sqlx::query_as(
        "SELECT l.sku, l.quantity, COALESCE(s.shipped, 0) AS shipped,
                COALESCE(a.allocated, 0) AS allocated, greatest(COALESCE(a.backordered - a.refilled, 0), 0) AS backordered
         FROM fulfillment_lines l LEFT JOIN shipments s USING (order_id, sku)
              LEFT JOIN allocation_lines a USING (order_id, sku)
         WHERE l.order_id = $1 ORDER BY l.sku",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(Fulfillment { order_id: order_id.to_owned(), status: Status::of(&lines), placed_at, lines }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: i64, shipped: i64) -> Line {
        Line { sku: "S".into(), quantity, shipped, allocated: 0, backordered: 0 }
    }

    #[test]
    fn status_follows_how_much_of_each_line_shipped() {
        assert_eq!(Status::of(&[line(2, 0), line(1, 0)]), Status::Pending);
        assert_eq!(Status::of(&[line(2, 1), line(1, 0)]), Status::PartiallyShipped);
        assert_eq!(Status::of(&[line(2, 2), line(1, 0)]), Status::PartiallyShipped);
        assert_eq!(Status::of(&[line(2, 2), line(1, 3)]), Status::Shipped);
        assert_eq!(Status::of(&[]), Status::Pending);
    }
}
