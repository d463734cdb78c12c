//! The HTTP surface: every route of the API, the OpenAPI document and its docs page, the web
//! pages and `/metrics`, behind the engine's middleware. The `marquee` crate serves it.

use crate::admission;
use crate::deadlines::{self, Deadlines, MAX_REQUEST_BODY};
use crate::error::{method_not_allowed, not_found};
use crate::headers::{ExchangeHeadersLayer, X_REQUEST_ID};
use crate::ratelimit::{self, Limiters};
use crate::state::AppState;
use crate::{idempotency, metrics, routes};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

/// The whole HTTP surface: API, OpenAPI document, docs page and metrics, with middleware.
pub fn router(state: AppState) -> Router {
    with_middleware(routes(), state)
}

/// Every route of the HTTP surface, without the middleware.
pub fn routes() -> Router<AppState> {
    api_routes().route("/metrics", get(metrics::render))
}

/// Every route but `/metrics`: what the API address serves when metrics have an address of
/// their own (`MARQUEE_METRICS_ADDR`). There `/metrics` is unknown (`404`).
pub fn api_routes() -> Router<AppState> {
    let (api, openapi) = routes::api().split_for_parts();
    let docs = routes::with_docs_csp(Router::from(
        SwaggerUi::new("/docs").url("/openapi.json", openapi),
    ));
    api.merge(docs)
        .merge(routes::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `/metrics` alone, for the metrics address. No admission, rate limits or tokens: whoever
/// can reach that address may read it.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ExchangeHeadersLayer)
}

/// `app` behind the engine's middleware: request ids and security headers, tracing, admission,
/// the panic catcher, metrics, the body limit, rate limits and idempotency keys.
///
/// Every layer added with [`Router::layer`] wraps each route in a boxed service of its own, so
/// every request pays an allocation and a dynamic call per layer. Only the layers that need
/// the matched route (metrics count by route template) or sit inside them are added that way;
/// the outer ones wrap the whole router once, as plain tower layers.
pub fn with_middleware(app: Router<AppState>, state: AppState) -> Router {
    let mut app = app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        idempotency::idempotency,
    ));
    // Outside idempotency: a limited request is refused before it touches anything. With rate
    // limits off there is no layer at all.
    if let Some(limits) = &state.config.rate_limits {
        let limiters = Limiters::new(limits, state.config.proxy_hops, state.keys.clone());
        app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(limiters),
            ratelimit::enforce,
        ));
    }
    let routed = app
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state.clone());
    let outer = tower::ServiceBuilder::new()
        // Outermost: the span below logs the request id, and every answer (the panic
        // catcher's and the shed ones too) carries the security headers.
        .layer(ExchangeHeadersLayer)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // Path only: query strings are logged nowhere, headers (tokens) never.
                    let request_id = request
                        .headers()
                        .get(X_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %request.method(),
                        path = %request.uri().path(), request_id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Outside everything that works on a request, so shedding one costs next to nothing.
        .layer(axum::middleware::from_fn_with_state(
            admission::Gate::new(state.config.max_in_flight, state.config.max_lag),
            admission::admit,
        ))
        // Right inside admission: an admitted request gives its slot back in bounded time.
        .layer(axum::middleware::from_fn_with_state(
            Deadlines {
                body: state.config.body_timeout,
                answer: state.config.request_timeout,
            },
            deadlines::enforce,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(crate::error::ApiError::Internal(
                anyhow::anyhow!("a request handler panicked"),
            ))
        }))
        .service(routed);
    Router::new().fallback_service(outer)
}
