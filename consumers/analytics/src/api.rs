//! The read API: `GET /v1/sales?bucket=hour|day&from=RFC3339&to=RFC3339` (JSON, or CSV with
//! `format=csv` or `Accept: text/csv`), `GET /v1/units?from=&to=` and
//! `GET /v1/stock-movements?from=&to=` (per day). Ranges are half-open, `[from, to)`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, Bucket, MovementsDay, SalesBucket, UnitsDay};

/// Widest range of an hourly read.
pub const MAX_HOURLY_RANGE_DAYS: i64 = 31;
/// Widest range of a daily read.
pub const MAX_DAILY_RANGE_DAYS: i64 = 366;

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(sales)).routes(routes!(units)).routes(routes!(movements))
}

/// The parameters of `GET /v1/sales`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// `hour` (default; ranges up to 31 days) or `day` (up to 366 days).
    #[param(value_type = Option<String>, pattern = "^(hour|day)$")]
    bucket: Option<String>,
    /// Start of the range, inclusive (RFC 3339).
    #[param(required = true, value_type = String, format = DateTime, max_length = 256)]
    from: Option<String>,
    /// End of the range, exclusive (RFC 3339); not before `from`.
    #[param(required = true, value_type = String, format = DateTime, max_length = 256)]
    to: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    #[param(value_type = Option<String>, pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// The parameters of the per-day reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DayParams {
    /// Start of the range, inclusive (RFC 3339; its day counts).
    #[param(required = true, value_type = String, format = DateTime, max_length = 256)]
    from: Option<String>,
    /// End of the range, exclusive (RFC 3339); at most 366 days after `from`.
    #[param(required = true, value_type = String, format = DateTime, max_length = 256)]
    to: Option<String>,
}

/// The JSON answer of `GET /v1/sales`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sales {
    /// Per bucket and currency, in time order.
    pub buckets: Vec<SalesBucket>,
}

/// The answer of `GET /v1/units`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Units {
    /// Units ordered per day and sku.
    pub days: Vec<UnitsDay>,
}

/// The answer of `GET /v1/stock-movements`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Movements {
    /// Stock changes per day and reason.
    pub days: Vec<MovementsDay>,
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

/// Orders and revenue per hour or day and currency, in `[from, to)`.
#[utoipa::path(get, path = "/v1/sales", tag = "analytics",
    params(Params),
    responses(
        (status = 200, description = "The buckets",
            content((Sales = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A missing or malformed parameter, `from` after `to`, or a range too wide for the bucket", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
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
    Ok(Json(Sales { buckets }).into_response())
}

/// Units ordered per day and sku, in `[from, to)`.
#[utoipa::path(get, path = "/v1/units", tag = "analytics",
    params(DayParams),
    responses(
        (status = 200, description = "The days", body = Units),
        (status = 400, description = "A missing or malformed parameter, `from` after `to`, or a range over 366 days", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn units(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Units>, ApiError> {
    let (from, to) = range(&params(query)?, MAX_DAILY_RANGE_DAYS)?;
    let days = store::units(&pool, from.date_naive(), to.date_naive()).await?;
    Ok(Json(Units { days }))
}

/// Stock changes and units moved per day and reason, in `[from, to)`.
#[utoipa::path(get, path = "/v1/stock-movements", tag = "analytics",
    params(DayParams),
    responses(
        (status = 200, description = "The days", body = Movements),
        (status = 400, description = "A missing or malformed parameter, `from` after `to`, or a range over 366 days", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn movements(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Movements>, ApiError> {
    let (from, to) = range(&params(query)?, MAX_DAILY_RANGE_DAYS)?;
    let days = store::movements(&pool, from.date_naive(), to.date_naive()).await?;
    Ok(Json(Movements { days }))
}
