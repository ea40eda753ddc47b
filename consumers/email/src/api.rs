//! The read API: `GET /v1/emails?order_id=...` → `{"emails": [...]}` (a filter: an order
//! with no email answers an empty list).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use orderflow_consumer_kit::{ApiError, bounded};
use orderflow_events::OrderId;
use serde::Deserialize;
use sqlx::PgPool;

use crate::store;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new().route("/v1/emails", get(emails)).with_state(pool)
}

#[derive(Debug, Deserialize)]
pub struct Params {
    order_id: Option<String>,
}

async fn emails(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let order_id = params.order_id.ok_or_else(|| ApiError::bad("order_id", "is required"))?;
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    let emails = store::emails_for_order(&pool, order_id.as_str()).await?;
    Ok(Json(serde_json::json!({ "emails": emails })))
}
