//! The operator endpoints every consumer serves next to its read API: the shared ones
//! (`orderflow_service::ops`), ready when [`Health::ready`] says so; and the bearer-token
//! check in front of the read API ([`authenticated`]). The operator endpoints stay open.

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_service::auth::Tokens;
use orderflow_service::ops::{self, Probe, Readiness};

use crate::RuntimeArgs;
use crate::consumer::Health;

/// The read API's tokens: `None` only with `--api-insecure-no-auth`. Refuses to run a read
/// API without tokens otherwise.
pub fn api_tokens(args: &RuntimeArgs) -> anyhow::Result<Option<Arc<Tokens>>> {
    let tokens = Tokens::load(args.api_tokens.as_ref().map(|s| s.0.as_str()), args.api_tokens_file.as_deref())
        .context("Failed to load the read API's tokens")?;
    match (tokens.is_empty(), args.api_insecure_no_auth) {
        (false, _) => Ok(Some(Arc::new(tokens))),
        (true, true) => {
            tracing::warn!("--api-insecure-no-auth: serving the read API without a token");
            Ok(None)
        }
        (true, false) => bail!(
            "no read API tokens configured: set API_TOKENS or --api-tokens-file (or --api-insecure-no-auth for local \
             experiments); the read API returns customer data"
        ),
    }
}

/// `api` behind a bearer-token check (when `tokens` is set): 401 with `WWW-Authenticate:
/// Bearer` for a missing or unknown token.
pub fn authenticated(api: Router, tokens: Option<Arc<Tokens>>) -> Router {
    match tokens {
        Some(tokens) => api.layer(axum::middleware::from_fn_with_state(tokens, check_token)),
        None => api,
    }
}

async fn check_token(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    match tokens.authenticate(request.headers().get(header::AUTHORIZATION)) {
        Some(client) => {
            tracing::debug!(client, path = request.uri().path(), "read API request");
            next.run(request).await
        }
        None => {
            let body = serde_json::json!({"error": "missing or unknown bearer token (Authorization: Bearer <token>)"});
            let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

impl Probe for Health {
    async fn readiness(&self) -> Readiness {
        let (ready, detail) = self.ready();
        Readiness { ready, detail }
    }
}

/// `/healthz` (the process runs), `/readyz` (joined and caught up), `/metrics` (Prometheus),
/// merged with `api`.
pub fn router(api: Router, health: Arc<Health>) -> Router {
    ops::router(health).merge(api)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Router,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(api, health)).with_graceful_shutdown(shutdown).await
}
