//! The read API: `GET /v1/customers/{customer_id}/orders?limit=` → the customer's orders,
//! newest first: `{"customer_id": "...", "orders": [...], "more": false}`. A customer with no
//! orders answers an empty list.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use orderflow_consumer_kit::{ApiError, bounded};
use orderflow_events::CustomerId;
use serde::Deserialize;
use sqlx::PgPool;

use crate::store;

/// Orders per page when `limit` is not given.
pub const DEFAULT_LIMIT: u16 = 20;
/// The largest page.
pub const MAX_LIMIT: u16 = 100;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new().route("/v1/customers/{customer_id}/orders", get(customer_orders)).with_state(pool)
}

#[derive(Debug, Deserialize)]
pub struct Params {
    limit: Option<String>,
}

/// `limit`, 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
fn limit(value: Option<&str>) -> Result<u16, ApiError> {
    let Some(value) = value else { return Ok(DEFAULT_LIMIT) };
    match bounded("limit", value)?.parse::<u16>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad("limit", format!("must be a whole number from 1 to {MAX_LIMIT}"))),
    }
}

async fn customer_orders(
    State(pool): State<PgPool>,
    Path(customer_id): Path<String>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let customer_id = CustomerId::parse(bounded("customer_id", &customer_id)?)
        .map_err(|e| ApiError::bad("customer_id", e.to_string()))?;
    let limit = limit(params.limit.as_deref())?;
    let (orders, more) = store::customer_orders(&pool, customer_id.as_str(), limit).await?;
    Ok(Json(serde_json::json!({ "customer_id": customer_id.as_str(), "orders": orders, "more": more })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_is_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("1")).unwrap(), 1);
        assert_eq!(limit(Some("100")).unwrap(), MAX_LIMIT);
        for bad in ["0", "101", "-1", "ten", "", "99999999999"] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
