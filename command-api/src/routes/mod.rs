//! The HTTP routes, one module per resource, the OpenAPI document they make up, and the
//! security headers every response carries.

pub mod dto;
pub mod events;
pub mod movies;
pub mod ops;
pub mod reservations;
pub mod showtimes;
pub mod stream;
pub mod theaters;
pub mod tickets;
pub mod users;
pub mod web;

use crate::state::AppState;
use axum::http::{header, HeaderValue};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(title = "Marquee", description = "Booking engine for cinemas: catalog, seat holds, payments and tickets. Errors are application/problem+json (RFC 9457)."),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError, stream::SeatChange, stream::ShowtimeCancelledChange)),
    tags(
        (name = "users", description = "Accounts and tokens"),
        (name = "catalog", description = "Theaters, movies and showtimes (admin commands)"),
        (name = "browse", description = "Searching theaters, movies and showtimes, served from read models"),
        (name = "booking", description = "Seat maps, holds, payments and tickets"),
        (name = "history", description = "The event log for analysts (admin)"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route with its OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(theaters::router())
        .merge(movies::router())
        .merge(showtimes::router())
        .merge(stream::router())
        .merge(reservations::router())
        .merge(tickets::router())
        .merge(events::router())
        .merge(ops::router());
    crate::error::document_shared_problems(api.get_openapi_mut());
    api
}

pub use crate::headers::API_CSP;

/// The Content-Security-Policy of the Swagger UI at `/docs`: its own scripts and styles only
/// (no inline script; it sets inline styles and draws icons from `data:` URIs), requests to
/// this server only, and no framing.
pub const DOCS_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// Gives the docs UI its own Content-Security-Policy; [`crate::headers::ExchangeHeaders`]
/// keeps it.
pub fn with_docs_csp<S: Clone + Send + Sync + 'static>(docs: Router<S>) -> Router<S> {
    docs.layer(SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    ))
}
