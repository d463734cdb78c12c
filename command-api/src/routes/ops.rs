//! Operations: liveness and readiness.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The state of one dependency.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub postgres: bool,
    pub nats: bool,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "up")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Postgres and NATS are reachable: 200 when both are, 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let postgres = sqlx::query("select 1").execute(&state.pool).await.is_ok();
    let nats = state
        .nats
        .get()
        .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
    let status = if postgres && nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Readiness { postgres, nats }))
}
