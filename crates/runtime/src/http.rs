//! The operator endpoints every consumer serves next to its read API: the shared ones
//! (`orderflow_service::ops`), ready when [`Health::ready`] says so; the bearer-token
//! check in front of the read API ([`authenticated`]); and `/openapi.json`, the read API's
//! description with what the runtime adds to every read ([`openapi`]). The operator
//! endpoints and the description stay open.

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_service::auth::Tokens;
use orderflow_service::ops::{self, Probe, Readiness};
use orderflow_service::{consistency as token, openapi as spec};
use serde::Serialize;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, Type,
};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;

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
            let body = ErrorBody::new("missing or unknown bearer token (Authorization: Bearer <token>)");
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
/// `/openapi.json` (`spec`), merged with `api`.
pub fn router(api: Router, spec: &OpenApi, health: Arc<Health>) -> Router {
    ops::router(health).merge(spec::router(spec)).merge(api)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Router,
    spec: OpenApi,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(api, &spec, health)).with_graceful_shutdown(shutdown).await
}

/// A consumer's read API: its routes and their description. From an `OpenApiRouter` (each
/// handler annotated with `#[utoipa::path]`), the description comes with the routes; from a
/// plain `axum::Router`, `/openapi.json` describes the operator endpoints only.
pub struct ReadApi {
    pub router: Router,
    pub spec: OpenApi,
}

impl From<Router> for ReadApi {
    fn from(router: Router) -> Self {
        ReadApi { router, spec: OpenApiRouter::<()>::new().into_openapi() }
    }
}

impl From<OpenApiRouter> for ReadApi {
    fn from(api: OpenApiRouter) -> Self {
        let (router, spec) = api.split_for_parts();
        ReadApi { router, spec }
    }
}

/// The error body of every read endpoint: `{"error": "...", "field": "..."}`, `field` naming
/// the parameter at fault when there is one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The parameter at fault (400 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody { error: error.into(), field: None }
    }

    /// `"<field>: <problem>"`, naming `field`.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        ErrorBody { error: format!("{field}: {problem}"), field: Some(field.to_owned()) }
    }
}

/// The description consumer `name` serves: `api` (its read endpoints, from their handlers)
/// with what the runtime adds to each of them: the bearer token (401), the consistency token
/// (`after` / `consistency-token`: 400 when malformed, 503 when not reached in time) and the
/// freshness headers; plus the operator endpoints.
pub fn openapi(name: &str, mut api: OpenApi) -> OpenApi {
    let mut schemas = Vec::new();
    <ErrorBody as ToSchema>::schemas(&mut schemas);
    <crate::consistency::NotAppliedYet as ToSchema>::schemas(&mut schemas);
    schemas.push((ErrorBody::name().into_owned(), ErrorBody::schema()));
    schemas.push((crate::consistency::NotAppliedYet::name().into_owned(), crate::consistency::NotAppliedYet::schema()));
    let reads = !api.paths.paths.is_empty();
    for item in api.paths.paths.values_mut() {
        for operation in spec::operations_mut(item) {
            read_operation(operation);
        }
    }
    if reads {
        let components = api.components.get_or_insert_with(Default::default);
        for (name, schema) in schemas {
            components.schemas.entry(name).or_insert(schema);
        }
    }
    spec::document(
        &format!("orderflow {name}"),
        &format!(
            "The read API of the `{name}` consumer, and its operator endpoints. Reads need `Authorization: Bearer \
             <token>` (API_TOKENS). A read may carry the ingress's consistency token (`after` or the \
             `consistency-token` header): it then waits until the consumer has applied those writes \
             (docs/read-your-writes.md)."
        ),
        api,
    )
}

fn json_of(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build()
}

fn text_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str, minimum: i64) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(minimum))))
        .description(Some(description))
        .build()
}

/// What the runtime's layers add to one read operation.
fn read_operation(operation: &mut utoipa::openapi::path::Operation) {
    let token_schema = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(token::MAX_LEN))
            .pattern(Some("^v1\\.[A-Za-z0-9_-]+$"))
            .description(Some(
                "A consistency token from the ingress's 202 answer, passed as is (`v1.` and URL-safe base64 of the \
                 positions it names); a made-up one is refused with 400",
            ))
            .build()
    };
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.push(RefOr::T(
        ParameterBuilder::new()
            .name(token::QUERY_PARAM)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "Wait (bounded, --read-wait-ms) until this consumer has applied the writes the token names, then read",
            ))
            .schema(Some(token_schema()))
            .build(),
    ));
    parameters.push(RefOr::T(
        ParameterBuilder::new()
            .name(token::HEADER)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some("The same as `after`, as a header (`after` wins when both are given)"))
            .schema(Some(token_schema()))
            .build(),
    ));
    operation.security = Some(vec![SecurityRequirement::new(spec::BEARER, Vec::<String>::new())]);
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        if let RefOr::T(response) = response
            && !status.starts_with('5')
        {
            response.headers.insert(
                crate::consistency::APPLIED_THROUGH_HEADER.to_owned(),
                RefOr::T(text_header(
                    "Per partition read (or named by the token): `topic:partition:next_offset`, comma-separated",
                )),
            );
            response.headers.insert(
                crate::consistency::LAST_APPLIED_AGE_HEADER.to_owned(),
                RefOr::T(integer_header("Milliseconds since the last event this instance applied was written", 0)),
            );
        }
    }
    match responses.get_mut("400") {
        Some(RefOr::T(response)) => {
            response.description.push_str("; or a malformed consistency token (`field`: `after`)");
        }
        _ => {
            responses.insert(
                "400".to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description("A malformed consistency token (`field`: `after`)")
                        .content("application/json", json_of("ErrorBody"))
                        .build(),
                ),
            );
        }
    }
    responses.insert(
        "401".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("No token, or an unknown one")
                .header("www-authenticate", text_header("`Bearer`"))
                .content("application/json", json_of("ErrorBody"))
                .build(),
        ),
    );
    responses.insert(
        "503".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("The consumer did not apply the token's writes within the wait; retry with the same token")
                .header("retry-after", integer_header("Seconds to wait before retrying", 0))
                .header(
                    crate::consistency::APPLIED_THROUGH_HEADER,
                    text_header("Per position of the token: `topic:partition:next_offset`"),
                )
                .content("application/json", json_of("NotAppliedYet"))
                .build(),
        ),
    );
}
