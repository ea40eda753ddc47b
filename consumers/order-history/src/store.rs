//! The order history's queries: one row per order, set by its OrderPlaced; a customer's page
//! of orders, newest first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orderflow_events::OrderPlaced;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// One order as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderRow {
    pub order_id: String,
    #[serde(skip)]
    pub customer_id: String,
    pub placed_at: DateTime<Utc>,
    pub total_minor: i64,
    pub currency: String,
    pub lines: i32,
}

impl OrderRow {
    pub fn of(order: &OrderPlaced) -> OrderRow {
        OrderRow {
            order_id: order.order_id.as_str().to_owned(),
            customer_id: order.customer.id.as_str().to_owned(),
            placed_at: order.placed_at,
            total_minor: order.total_minor.get(),
            currency: order.currency.as_str().to_owned(),
            // An order has at most a few hundred lines (the event's validation bounds them).
            lines: i32::try_from(order.lines.len()).unwrap_or(i32::MAX),
        }
    }
}

/// Set the rows of `orders` (order id → row), in one statement, in key order.
pub async fn upsert_orders(tx: &mut PgConnection, orders: &BTreeMap<String, OrderRow>) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let rows: Vec<&OrderRow> = orders.values().collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.order_id.as_str()).collect();
    let customers: Vec<&str> = rows.iter().map(|r| r.customer_id.as_str()).collect();
    let placed: Vec<DateTime<Utc>> = rows.iter().map(|r| r.placed_at).collect();
    let totals: Vec<i64> = rows.iter().map(|r| r.total_minor).collect();
    let currencies: Vec<&str> = rows.iter().map(|r| r.currency.as_str()).collect();
    let lines: Vec<i32> = rows.iter().map(|r| r.lines).collect();
    sqlx::query(
        "INSERT INTO customer_orders (order_id, customer_id, placed_at, total_minor, currency, lines)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::bigint[], $5::text[], $6::int[])
         ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, placed_at = EXCLUDED.placed_at,
             total_minor = EXCLUDED.total_minor, currency = EXCLUDED.currency, lines = EXCLUDED.lines",
    )
    .bind(&ids)
    .bind(&customers)
    .bind(&placed)
    .bind(&totals)
    .bind(&currencies)
    .bind(&lines)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Up to `limit` of the customer's orders, newest first (ties by order id, descending), and
/// whether there are more.
pub async fn customer_orders(
    pool: &PgPool,
    customer_id: &str,
    limit: u16,
) -> Result<(Vec<OrderRow>, bool), sqlx::Error> {
    let mut rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT order_id, customer_id, placed_at, total_minor, currency, lines FROM customer_orders
         WHERE customer_id = $1 ORDER BY placed_at DESC, order_id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() > usize::from(limit);
    rows.truncate(usize::from(limit));
    Ok((rows, more))
}
