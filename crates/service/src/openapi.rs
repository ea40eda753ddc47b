//! The OpenAPI 3.1 description every orderflow HTTP service serves at `GET /openapi.json`,
//! generated from its handlers (utoipa's `#[utoipa::path]` on each one, collected by
//! `utoipa_axum`'s `OpenApiRouter` as the routes are added, so a route cannot exist without
//! its description). The committed copies under `docs/openapi/` are written by
//! `orderflow openapi --write` and checked against the code by `orderflow openapi --check`.
//!
//! # Owns
//! - [`document`]: a service's own paths plus the operator endpoints ([`crate::ops`]), its
//!   title and version, and the `bearer` security scheme its protected operations name;
//! - [`router`]: the `GET /openapi.json` route.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, LicenseBuilder, OpenApi, PathItem};

pub use utoipa;
pub use utoipa_axum;

/// Where every service serves its description.
pub const PATH: &str = "/openapi.json";

/// The security scheme's name: `Authorization: Bearer <token>` (`API_TOKENS`).
pub const BEARER: &str = "bearer";

/// The description `title` serves: `api` (its own operations) with the operator endpoints,
/// the version of this build, and the bearer scheme.
pub fn document(title: &str, description: &str, api: OpenApi) -> OpenApi {
    let mut spec = crate::ops::openapi();
    spec.merge(api);
    spec.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .license(Some(LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build()))
        .build();
    let mut components = spec.components.take().unwrap_or_else(|| ComponentsBuilder::new().build());
    components.security_schemes.insert(
        BEARER.to_owned(),
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A token of API_TOKENS (`name:token` pairs); the name identifies the client"))
                .build(),
        )
        .into(),
    );
    spec.components = Some(components);
    spec
}

/// Every operation of a path (the methods the service answers there).
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

/// `GET /openapi.json` answering `spec` (pretty JSON, rendered once).
pub fn router(spec: &OpenApi) -> Router {
    let body: Arc<str> = to_json(spec).into();
    Router::new().route(
        PATH,
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body.to_string()) }
        }),
    )
}

/// The committed form of a description: pretty JSON with a final newline.
pub fn to_json(spec: &OpenApi) -> String {
    let mut json = spec.to_pretty_json().expect("an OpenAPI description serializes to JSON");
    json.push('\n');
    json
}
