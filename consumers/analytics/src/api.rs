//! The read API: `GET /v1/sales?bucket=hour|day&from=RFC3339&to=RFC3339` (JSON, or CSV with
//! `format=csv` or `Accept: text/csv`), `GET /v1/units?from=&to=` and
//! `GET /v1/stock-movements?from=&to=` (per day). Ranges are half-open, `[from, to)`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use orderflow_consumer_kit::{ApiError, bounded};
use serde::Deserialize;
use sqlx::PgPool;

use crate::store::{self, Bucket};

/// Widest range of an hourly read.
pub const MAX_HOURLY_RANGE_DAYS: i64 = 31;
/// Widest range of a daily read.
pub const MAX_DAILY_RANGE_DAYS: i64 = 366;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/v1/sales", get(sales))
        .route("/v1/units", get(units))
        .route("/v1/stock-movements", get(movements))
        .with_state(pool)
}

#[derive(Debug, Deserialize)]
pub struct Params {
    bucket: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

fn params(query: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    query.map(|Query(p)| p).map_err(|e| ApiError::bad("query", e.body_text()))
}

fn time(field: &'static str, value: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let value = bounded(
        field,
        value.ok_or_else(|| ApiError::bad(field, "is required (RFC 3339, e.g. 2026-11-22T13:00:00Z)"))?,
    )?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad(field, format!("must be an RFC 3339 time like 2026-11-22T13:00:00Z ({e})")))
}

/// `from` and `to`, checked: `from <= to`, and at most `max_days` apart.
fn range(p: &Params, max_days: i64) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (from, to) = (time("from", p.from.as_deref())?, time("to", p.to.as_deref())?);
    if from > to {
        return Err(ApiError::bad("from", "must not be after to"));
    }
    if to - from > TimeDelta::days(max_days) {
        return Err(ApiError::bad("to", format!("the range is wider than {max_days} days")));
    }
    Ok((from, to))
}

fn bucket(p: &Params) -> Result<Bucket, ApiError> {
    match p.bucket.as_deref() {
        None | Some("hour") => Ok(Bucket::Hour),
        Some("day") => Ok(Bucket::Day),
        Some(_) => Err(ApiError::bad("bucket", "must be hour or day")),
    }
}

fn wants_csv(p: &Params, headers: &HeaderMap) -> Result<bool, ApiError> {
    match p.format.as_deref() {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(ApiError::bad("format", "must be json or csv")),
        None => Ok(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/csv"))),
    }
}

async fn sales(
    State(pool): State<PgPool>,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let bucket = bucket(&p)?;
    let max_days = if bucket == Bucket::Hour { MAX_HOURLY_RANGE_DAYS } else { MAX_DAILY_RANGE_DAYS };
    let (from, to) = range(&p, max_days)?;
    let csv = wants_csv(&p, &headers)?;
    let buckets = store::sales(&pool, bucket, from, to).await?;
    if csv {
        let mut body = String::from("bucket,currency,orders,revenue_minor\n");
        for b in &buckets {
            body.push_str(&format!(
                "{},{},{},{}\n",
                b.bucket.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                b.currency,
                b.orders,
                b.revenue_minor
            ));
        }
        let disposition =
            format!("attachment; filename=\"sales-{}.csv\"", if bucket == Bucket::Hour { "hourly" } else { "daily" });
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
            body,
        )
            .into_response());
    }
    Ok(Json(serde_json::json!({ "buckets": buckets })).into_response())
}

async fn units(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = range(&params(query)?, MAX_DAILY_RANGE_DAYS)?;
    let days = store::units(&pool, from.date_naive(), to.date_naive()).await?;
    Ok(Json(serde_json::json!({ "days": days })))
}

async fn movements(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = range(&params(query)?, MAX_DAILY_RANGE_DAYS)?;
    let days = store::movements(&pool, from.date_naive(), to.date_naive()).await?;
    Ok(Json(serde_json::json!({ "days": days })))
}
