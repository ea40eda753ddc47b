//! The operator endpoints every consumer serves next to its read API.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::consumer::Health;
use crate::observe;

/// `/healthz` (the process runs), `/readyz` (joined and caught up), `/metrics` (Prometheus),
/// merged with `api`.
pub fn router(api: Router, health: Arc<Health>) -> Router {
    let ready = move || {
        let health = health.clone();
        async move {
            let (ready, detail) = health.ready();
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(serde_json::json!({ "ready": ready, "detail": detail })))
        }
    };
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { observe::prometheus().render().into_response() }))
        .merge(api)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Router,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    observe::prometheus();
    axum::serve(listener, router(api, health)).with_graceful_shutdown(shutdown).await
}
