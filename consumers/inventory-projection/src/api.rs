//! The read API: `GET /v1/inventory/{sku}`.

use axum::Json;
use axum::extract::{Path, State};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use orderflow_events::Sku;
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, SkuInventory};

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(inventory))
}

/// One sku's stock per warehouse, with what is reserved, allocated and backordered.
#[utoipa::path(get, path = "/v1/inventory/{sku}", tag = "inventory",
    params(("sku" = inline(Sku), Path, description = "Stock keeping unit")),
    responses(
        (status = 200, description = "The sku's stock", body = SkuInventory),
        (status = 400, description = "A malformed sku", body = ErrorBody),
        (status = 404, description = "No stock change of this sku was applied (yet)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn inventory(State(pool): State<PgPool>, Path(sku): Path<String>) -> Result<Json<SkuInventory>, ApiError> {
    let sku = Sku::parse(bounded("sku", &sku)?).map_err(|e| ApiError::bad("sku", e.to_string()))?;
    match store::sku_inventory(&pool, sku.as_str()).await? {
        Some(found) => Ok(Json(found)),
        None => Err(ApiError::NotFound(format!("sku {}", sku.as_str()))),
    }
}
