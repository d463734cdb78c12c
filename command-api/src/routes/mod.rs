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
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
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

/// The Content-Security-Policy of API answers: JSON is never a document, so it may load
/// nothing, run nothing and be framed by nobody.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The Content-Security-Policy of the Swagger UI at `/docs`: its own scripts and styles only
/// (no inline script; it sets inline styles and draws icons from `data:` URIs), requests to
/// this server only, and no framing.
pub const DOCS_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// Gives the docs UI its own Content-Security-Policy; [`with_security_headers`] keeps it.
pub fn with_docs_csp<S: Clone + Send + Sync + 'static>(docs: Router<S>) -> Router<S> {
    docs.layer(SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    ))
}

/// The headers every response carries, errors included: no MIME sniffing, no framing, no
/// referrer, HTTPS only once a browser has seen it over HTTPS, and the API's
/// Content-Security-Policy where no route set its own. Answers that may hold personal data or
/// tokens are never stored by caches.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let always = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    let mut router = router
        .layer(axum::middleware::from_fn(no_store_when_private))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        ));
    for (name, value) in always {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// `Cache-Control: no-store` on every answer to a request with a bearer token and on every
/// answer to a write (a token, an account, tickets); public reads stay cacheable.
async fn no_store_when_private(request: Request, next: Next) -> Response {
    let private = request.headers().contains_key(header::AUTHORIZATION)
        || !matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = next.run(request).await;
    if private {
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    response
}
