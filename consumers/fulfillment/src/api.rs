//! The read API: `GET /v1/fulfillments/{order_id}`.

use axum::Json;
use axum::extract::{Path, State};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use orderflow_events::OrderId;
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, Fulfillment};

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(fulfillment))
}

/// One order's fulfillment: its lines, what shipped, what the allocator reserved or backordered.
#[utoipa::path(get, path = "/v1/fulfillments/{order_id}", tag = "fulfillment",
    params(("order_id" = inline(OrderId), Path, description = "Checkout's order id")),
    responses(
        (status = 200, description = "The order's fulfillment", body = Fulfillment),
        (status = 400, description = "A malformed order id", body = ErrorBody),
        (status = 404, description = "No order with this id was applied (yet)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn fulfillment(State(pool): State<PgPool>, Path(order_id): Path<String>) -> Result<Json<Fulfillment>, ApiError> {
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    match store::fulfillment(&pool, order_id.as_str()).await? {
        Some(found) => Ok(Json(found)),
        None => Err(ApiError::NotFound(format!("order {}", order_id.as_str()))),
    }
}
