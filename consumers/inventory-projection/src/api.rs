//! The read API: `GET /v1/inventory/{sku}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use orderflow_consumer_kit::{ApiError, bounded};
use orderflow_events::Sku;
use sqlx::PgPool;

use crate::store::{self, SkuInventory};

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new().route("/v1/inventory/{sku}", get(inventory)).with_state(pool)
}

async fn inventory(State(pool): State<PgPool>, Path(sku): Path<String>) -> Result<Json<SkuInventory>, ApiError> {
    let sku = Sku::parse(bounded("sku", &sku)?).map_err(|e| ApiError::bad("sku", e.to_string()))?;
    match store::sku_inventory(&pool, sku.as_str()).await? {
        Some(found) => Ok(Json(found)),
        None => Err(ApiError::NotFound(format!("sku {}", sku.as_str()))),
    }
}
