//! The analytics read store's queries: batched additive upserts (in key order, so
//! concurrent batches cannot deadlock) and bucketed reads.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Two counters added per key: (orders, revenue) or (movements, units).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pair(pub i64, pub i64);

impl std::ops::AddAssign for Pair {
    fn add_assign(&mut self, other: Pair) {
        self.0 += other.0;
        self.1 += other.1;
    }
}

/// What one batch adds to the store.
#[derive(Debug, Default)]
pub struct Increments {
    /// (hour, currency) → (orders, revenue in minor units)
    pub sales: BTreeMap<(DateTime<Utc>, String), Pair>,
    /// (day, sku) → units
    pub units: BTreeMap<(NaiveDate, String), i64>,
    /// (day, reason) → (movements, net units)
    pub movements: BTreeMap<(NaiveDate, String), Pair>,
}

pub async fn add(tx: &mut PgConnection, inc: &Increments) -> Result<(), sqlx::Error> {
    if !inc.sales.is_empty() {
        let (hours, currencies): (Vec<_>, Vec<_>) = inc.sales.keys().map(|(h, c)| (*h, c.as_str())).unzip();
        let (orders, revenue): (Vec<_>, Vec<_>) = inc.sales.values().map(|p| (p.0, p.1)).unzip();
        sqlx::query(
            "INSERT INTO sales_hourly (hour, currency, orders, revenue_minor)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (hour, currency) DO UPDATE SET orders = sales_hourly.orders + EXCLUDED.orders,
                 revenue_minor = sales_hourly.revenue_minor + EXCLUDED.revenue_minor",
        )
        .bind(hours)
        .bind(currencies)
        .bind(orders)
        .bind(revenue)
        .execute(&mut *tx)
        .await?;
    }
    if !inc.units.is_empty() {
        let (days, skus): (Vec<_>, Vec<_>) = inc.units.keys().map(|(d, s)| (*d, s.as_str())).unzip();
        let units: Vec<i64> = inc.units.values().copied().collect();
        sqlx::query(
            "INSERT INTO units_daily (day, sku, units)
             SELECT * FROM UNNEST($1::date[], $2::text[], $3::bigint[])
             ON CONFLICT (day, sku) DO UPDATE SET units = units_daily.units + EXCLUDED.units",
        )
        .bind(days)
        .bind(skus)
        .bind(units)
        .execute(&mut *tx)
        .await?;
    }
    if !inc.movements.is_empty() {
        let (days, reasons): (Vec<_>, Vec<_>) = inc.movements.keys().map(|(d, r)| (*d, r.as_str())).unzip();
        let (movements, units): (Vec<_>, Vec<_>) = inc.movements.values().map(|p| (p.0, p.1)).unzip();
        sqlx::query(
            "INSERT INTO stock_movements_daily (day, reason, movements, units)
             SELECT * FROM UNNEST($1::date[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (day, reason) DO UPDATE SET movements = stock_movements_daily.movements + EXCLUDED.movements,
                 units = stock_movements_daily.units + EXCLUDED.units",
        )
        .bind(days)
        .bind(reasons)
        .bind(movements)
        .bind(units)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Bucket width of a sales read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SalesBucket {
    pub bucket: DateTime<Utc>,
    pub currency: String,
    pub orders: i64,
    pub revenue_minor: i64,
}

/// Sales of the hours in `[from, to)`, per bucket and currency (days sum their hours, UTC).
pub async fn sales(
    pool: &PgPool,
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SalesBucket>, sqlx::Error> {
    let truncate = match bucket {
        Bucket::Hour => "hour",
        Bucket::Day => "day",
    };
    sqlx::query_as(
        "SELECT date_trunc($1, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, currency,
                sum(orders)::bigint AS orders, sum(revenue_minor)::bigint AS revenue_minor
         FROM sales_hourly WHERE hour >= $2 AND hour < $3
         GROUP BY 1, currency ORDER BY 1, currency",
    )
    .bind(truncate)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UnitsDay {
    pub day: NaiveDate,
    pub sku: String,
    pub units: i64,
}

/// Units sold per sku on the days in `[from, to)`.
pub async fn units(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Vec<UnitsDay>, sqlx::Error> {
    sqlx::query_as("SELECT day, sku, units FROM units_daily WHERE day >= $1 AND day < $2 ORDER BY day, sku")
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MovementsDay {
    pub day: NaiveDate,
    pub reason: String,
    pub movements: i64,
    pub units: i64,
}

/// Stock movements per reason on the days in `[from, to)`.
pub async fn movements(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Vec<MovementsDay>, sqlx::Error> {
    sqlx::query_as("SELECT day, reason, movements, units FROM stock_movements_daily WHERE day >= $1 AND day < $2 ORDER BY day, reason")
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
}
