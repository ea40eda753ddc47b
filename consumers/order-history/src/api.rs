//! The read API: `GET /v1/customers/{customer_id}/orders?limit=` → the customer's orders,
//! newest first: `{"customer_id": "...", "orders": [...], "more": false}`. A customer with no
//! orders answers an empty list.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use orderflow_events::CustomerId;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, OrderRow};

/// Orders per page when `limit` is not given.
pub const DEFAULT_LIMIT: u16 = 20;
/// The largest page.
pub const MAX_LIMIT: u16 = 100;

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(customer_orders))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Orders per page, 1 to 100 (default 20).
    #[param(value_type = Option<u16>, minimum = 1, maximum = 100)]
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

/// The answer of `GET /v1/customers/{customer_id}/orders`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerOrders {
    pub customer_id: String,
    /// Newest first.
    pub orders: Vec<OrderRow>,
    /// Whether older orders exist beyond this page.
    pub more: bool,
}

/// A customer's orders, newest first (an empty list for a customer with none).
#[utoipa::path(get, path = "/v1/customers/{customer_id}/orders", tag = "order-history",
    params(("customer_id" = inline(CustomerId), Path, description = "Checkout's customer id"), Params),
    responses(
        (status = 200, description = "The customer's orders", body = CustomerOrders),
        (status = 400, description = "A malformed customer id or limit", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn customer_orders(
    State(pool): State<PgPool>,
    Path(customer_id): Path<String>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<CustomerOrders>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let customer_id = CustomerId::parse(bounded("customer_id", &customer_id)?)
        .map_err(|e| ApiError::bad("customer_id", e.to_string()))?;
    let limit = limit(params.limit.as_deref())?;
    let (orders, more) = store::customer_orders(&pool, customer_id.as_str(), limit).await?;
    Ok(Json(CustomerOrders { customer_id: customer_id.as_str().to_owned(), orders, more }))
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
