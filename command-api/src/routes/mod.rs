//! The HTTP routes, one module per resource, and the OpenAPI document they make up.

pub mod dto;
pub mod events;
pub mod movies;
pub mod ops;
pub mod reservations;
pub mod showtimes;
pub mod theaters;
pub mod tickets;
pub mod users;

use crate::state::AppState;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(title = "Marquee", description = "Booking engine for cinemas: catalog, seat holds, payments and tickets. Errors are application/problem+json (RFC 9457)."),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
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
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(theaters::router())
        .merge(movies::router())
        .merge(showtimes::router())
        .merge(reservations::router())
        .merge(tickets::router())
        .merge(events::router())
        .merge(ops::router())
}
