//! The read API:
//! - `GET /v1/stock/{sku}` → `{"sku", "on_hand", "allocated", "available", "backordered",
//!   "warehouses": [{"warehouse", "on_hand", "allocated", "available"}]}`; a sku never seen
//!   answers zeros.
//! - `GET /v1/allocations/{order_id}` → `{"order_id", "placed_at", "decided_at", "allocated":
//!   [{"sku", "warehouse", "quantity"}], "backordered": [{"sku", "quantity_missing"}]}`
//!   (`backordered`: what the order still waits for); 404 before the order is decided.

use axum::Json;
use axum::extract::{Path, State};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use orderflow_events::{OrderId, Sku};
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, OrderDecision, SkuStock};

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(stock)).routes(routes!(allocation))
}

/// One sku's stock as the allocator sees it: on hand, allocated, available, per warehouse.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "allocator",
    params(("sku" = inline(Sku), Path, description = "Stock keeping unit")),
    responses(
        (status = 200, description = "The sku's stock (zeros for a sku never seen)", body = SkuStock),
        (status = 400, description = "A malformed sku", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn stock(State(pool): State<PgPool>, Path(sku): Path<String>) -> Result<Json<SkuStock>, ApiError> {
    let sku = Sku::parse(bounded("sku", &sku)?).map_err(|e| ApiError::bad("sku", e.to_string()))?;
    Ok(Json(store::sku_stock(&pool, sku.as_str()).await?))
}

/// The allocator's decision on one order: what it reserved where, and what it still waits for.
#[utoipa::path(get, path = "/v1/allocations/{order_id}", tag = "allocator",
    params(("order_id" = inline(OrderId), Path, description = "Checkout's order id")),
    responses(
        (status = 200, description = "The order's decision", body = OrderDecision),
        (status = 400, description = "A malformed order id", body = ErrorBody),
        (status = 404, description = "The order was not decided (yet)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn allocation(State(pool): State<PgPool>, Path(order_id): Path<String>) -> Result<Json<OrderDecision>, ApiError> {
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    store::order_decision(&pool, order_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("a decision on order {}", order_id.as_str())))
}
