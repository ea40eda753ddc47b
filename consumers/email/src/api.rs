//! The read API: `GET /v1/emails?order_id=...` → `{"emails": [...]}` (a filter: an order
//! with no email answers an empty list).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use orderflow_consumer_kit::{ApiError, ErrorBody, OpenApiRouter, bounded};
use orderflow_events::OrderId;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa_axum::routes;

use crate::store::{self, EmailView};

pub fn router() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(emails))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// The order whose emails to list.
    #[param(required = true, inline, value_type = OrderId)]
    order_id: Option<String>,
}

/// The answer of `GET /v1/emails`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Emails {
    /// The order's emails (confirmation, backorder notices), with their delivery state.
    pub emails: Vec<EmailView>,
}

/// The emails of one order and how their delivery stands. Returns customer addresses.
#[utoipa::path(get, path = "/v1/emails", tag = "email",
    params(Params),
    responses(
        (status = 200, description = "The order's emails (an empty list when it has none)", body = Emails),
        (status = 400, description = "`order_id` is missing or malformed", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    ),
)]
async fn emails(
    State(pool): State<PgPool>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Emails>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let order_id = params.order_id.ok_or_else(|| ApiError::bad("order_id", "is required"))?;
    let order_id =
        OrderId::parse(bounded("order_id", &order_id)?).map_err(|e| ApiError::bad("order_id", e.to_string()))?;
    let emails = store::emails_for_order(&pool, order_id.as_str()).await?;
    Ok(Json(Emails { emails }))
}
