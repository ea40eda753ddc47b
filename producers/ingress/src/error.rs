//! Every way a request can fail, its HTTP status and its JSON body
//! (`{"error": "<class>", "message": "...", "fields": [{"field", "problem"}]}`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orderflow_events::FieldError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 2;

/// The body of every error answer of the write endpoints.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The kind of error, for programs.
    #[schema(value_type = String, examples("invalid", "unauthorized", "rate_limited"))]
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Every invalid field (422 `invalid` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON, or a header is malformed.
    BadRequest(String),
    /// 401: no token, or not one we know.
    Unauthorized,
    /// 413: the body (or the batch) is over its limit.
    TooLarge(String),
    /// 415: not `application/json`.
    UnsupportedMediaType(String),
    /// 422: well-formed JSON naming invalid fields.
    Invalid(Vec<FieldError>),
    /// 409: a request with the same `Idempotency-Key` is still being processed.
    KeyInFlight,
    /// 422: the `Idempotency-Key` was used before with a different request body.
    KeyReused,
    /// 429: the client is over its rate limit.
    RateLimited(crate::ratelimit::Limited),
    /// 503: the broker is unreachable, slow, or we are at capacity. Safe to retry.
    Unavailable(String),
    /// 500: something that should not happen (logged where it happened).
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::KeyInFlight => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn class(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid(_) => "invalid",
            ApiError::KeyInFlight => "idempotency_key_in_flight",
            ApiError::KeyReused => "idempotency_key_reused",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::TooLarge(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m.clone(),
            ApiError::Unauthorized => "missing or unknown bearer token (Authorization: Bearer <token>)".to_owned(),
            ApiError::Invalid(fields) => format!("{} invalid field(s)", fields.len()),
            ApiError::KeyInFlight => {
                "a request with this Idempotency-Key is still being processed; retry after Retry-After seconds \
                 with the same key"
                    .to_owned()
            }
            ApiError::RateLimited(limited) => {
                format!("this client is over its rate limit; retry after {} s", retry_after_secs(limited.retry_after))
            }
            ApiError::KeyReused => "this Idempotency-Key was already used with a different request body; a new \
                                    request needs a new key"
                .to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.class(),
            message: self.message(),
            fields: match &self {
                ApiError::Invalid(fields) => Some(fields.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unavailable(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            ApiError::KeyInFlight => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::RateLimited(limited) => {
                let wait = retry_after_secs(limited.retry_after);
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
                if let Ok(policy) = HeaderValue::from_str(&limited.policy) {
                    headers.insert("ratelimit-policy", policy);
                }
                if let Ok(state) = HeaderValue::from_str(&format!("\"per-client\";r=0;t={wait}")) {
                    headers.insert("ratelimit", state);
                }
            }
            ApiError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooLarge(_) => {
                // What is left of an oversized body is not read: do not reuse the connection.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Parse a JSON body into `T`: syntax errors are 400, a well-formed body with a wrong type,
/// missing required structure or an unknown field is 422 naming the field's path.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::Invalid(vec![FieldError {
                field: if path == "." { "body".to_owned() } else { path },
                problem: without_position(&inner.to_string()),
            }]),
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde_json's messages end in " at line L column C"; the position means nothing once the
/// field path is given.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Whole seconds to wait, at least 1 (`Retry-After` has no fractions).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::OrderRequest;

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(parse_json::<OrderRequest>(b"{\"order_id\": "), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse_json::<OrderRequest>(b"{} trailing"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        let Err(ApiError::Invalid(fields)) = parse_json::<OrderRequest>(br#"{"lines": [{"quantity": "two"}]}"#) else {
            panic!("expected 422")
        };
        assert_eq!(fields[0].field, "lines[0].quantity");
        let Err(ApiError::Invalid(fields)) = parse_json::<OrderRequest>(br#"{"placedAt": "x"}"#) else {
            panic!("expected 422")
        };
        assert!(fields[0].problem.contains("placedAt"), "{fields:?}");
        assert!(!fields[0].problem.contains("line 1"), "{fields:?}");
    }
}
