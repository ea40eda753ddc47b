//! The read API: `GET /v1/fulfillments/{order_id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use orderflow_consumer_kit::{ApiError, bounded};
use orderflow_events::OrderId;
use sqlx::PgPool;

use crate::store::{self, Fulfillment};

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new().route("/v1/fulfillments/{order_id}", get(fulfillment)).with_state(pool)
}

async fn fulfillment(State(pool): State<PgPool>, Path(order_id): Path<String>) -> Result<Json<Fulfillment>, ApiError> {
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    match store::fulfillment(&pool, order_id.as_str()).await? {
        Some(found) => Ok(Json(found)),
        None => Err(ApiError::NotFound(format!("order {}", order_id.as_str()))),
    }
}
