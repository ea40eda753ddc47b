//! What orderflow's own consumers (`consumers/*`) share beyond the runtime.
//!
//! # Owns
//! - [`ApiError`]: the JSON error bodies of the read APIs (400 with the parameter and the
//!   problem, 404 for unknown ids, 500 without internals);
//! - [`testing`] (feature `testing`): run a consumer in-process against the real broker and
//!   Postgres with a fresh schema, group and port, and read its HTTP API.
//!
//! # Must not touch
//! Kafka, offsets and batching (that is `orderflow-runtime`), and any consumer's tables.

#[cfg(feature = "testing")]
pub mod testing;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Longest path or query parameter a read API accepts, in bytes.
pub const MAX_PARAM_LEN: usize = 256;

/// An error answer of a read endpoint: `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter is missing, malformed or out of range (400).
    BadRequest { field: &'static str, problem: String },
    /// Nothing is known under this id (404).
    NotFound(String),
    /// The store failed (500); the cause is logged here, never sent.
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn bad(field: &'static str, problem: impl Into<String>) -> Self {
        ApiError::BadRequest { field, problem: problem.into() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest { field, problem } => {
                (StatusCode::BAD_REQUEST, serde_json::json!({"error": format!("{field}: {problem}"), "field": field}))
            }
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, serde_json::json!({"error": format!("{what} not found")})),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "read endpoint failed");
                (StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "internal error, see the service's log"}))
            }
        };
        (status, Json(body)).into_response()
    }
}

/// Check a parameter's length before parsing it.
pub fn bounded<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.len() > MAX_PARAM_LEN {
        return Err(ApiError::bad(field, format!("longer than {MAX_PARAM_LEN} bytes")));
    }
    Ok(value)
}
