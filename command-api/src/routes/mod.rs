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

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::Operation;

    fn statuses(op: &Operation) -> Vec<&str> {
        op.responses.responses.keys().map(String::as_str).collect()
    }

    #[test]
    fn every_operation_documents_the_problems_its_extractors_and_middleware_answer() {
        let doc = super::api().into_openapi();
        let path = |p: &str| doc.paths.paths.get(p).expect("the path is documented");
        let register = path("/v1/users").post.as_ref().unwrap();
        for status in ["400", "409", "413", "415", "422", "429", "503"] {
            assert!(
                statuses(register).contains(&status),
                "POST /v1/users: {status}"
            );
        }
        let me = path("/v1/users/me").get.as_ref().unwrap();
        assert!(statuses(me).contains(&"401"));
        let theater = path("/v1/theaters/{id}").get.as_ref().unwrap();
        assert!(statuses(theater).contains(&"404"));
        // The handler's own description wins over the shared one.
        let conflict = &register.responses.responses["409"];
        let utoipa::openapi::RefOr::T(conflict) = conflict else {
            panic!("an inline response")
        };
        assert_eq!(conflict.description, "email-taken");
        let health = path("/healthz").get.as_ref().unwrap();
        assert_eq!(statuses(health), ["200"]);
    }
}
