//! The read API:
//! - `GET /v1/stock/{sku}` → `{"sku", "on_hand", "allocated", "available", "backordered",
//!   "warehouses": [{"warehouse", "on_hand", "allocated", "available"}]}`; a sku never seen
//!   answers zeros.
//! - `GET /v1/allocations/{order_id}` → `{"order_id", "placed_at", "decided_at", "allocated":
//!   [{"sku", "warehouse", "quantity"}], "backordered": [{"sku", "quantity_missing"}]}`
//!   (`backordered`: what the order still waits for); 404 before the order is decided.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use orderflow_consumer_kit::{ApiError, bounded};
use orderflow_events::{OrderId, Sku};
use sqlx::PgPool;

use crate::store;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/v1/stock/{sku}", get(stock))
        .route("/v1/allocations/{order_id}", get(allocation))
        .with_state(pool)
}

async fn stock(State(pool): State<PgPool>, Path(sku): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let sku = Sku::parse(bounded("sku", &sku)?).map_err(|e| ApiError::bad("sku", e.to_string()))?;
    Ok(Json(store::sku_stock(&pool, sku.as_str()).await?))
}

async fn allocation(
    State(pool): State<PgPool>,
    Path(order_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    store::order_decision(&pool, order_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("a decision on order {}", order_id.as_str())))
}
