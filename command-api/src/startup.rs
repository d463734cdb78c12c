//! Building and running the engine from injected resources, so tests build exactly what the
//! binary runs.

use crate::auth::{bootstrap_admin, signing_secret, TokenKeys};
use crate::config::Config;
use crate::error::{log_internal_errors, method_not_allowed, not_found};
use crate::event_store::EventStore;
use crate::payment::TestCardProcessor;
use crate::state::AppState;
use crate::writer::Writers;
use crate::{db, idempotency, routes, timer};
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

/// Largest request body accepted. Every request of the API is small; a big body is a mistake
/// or an attack.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Connects to Postgres (creating the database and applying migrations), prepares the token
/// keys and the admin account, and starts connecting to NATS in the background.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let pool = db::connect_and_migrate(&config.database_url).await?;
    let secret = signing_secret(&pool, config.jwt_secret.as_deref())
        .await
        .context("cannot load the token signing secret")?;
    if let Some((email, password)) = &config.admin {
        bootstrap_admin(&pool, email, password).await?;
    }
    let store = EventStore::new(pool.clone());
    let nats = Arc::new(tokio::sync::OnceCell::new());
    connect_nats(config.nats_url.clone(), nats.clone());
    Ok(AppState {
        writers: Writers::new(store.clone(), config.showtime_queue),
        store,
        keys: Arc::new(TokenKeys::new(&secret)),
        payments: Arc::new(TestCardProcessor {
            latency: config.payment_latency,
        }),
        config: Arc::new(config),
        nats,
        pool,
    })
}

fn connect_nats(url: String, cell: Arc<tokio::sync::OnceCell<async_nats::Client>>) {
    tokio::spawn(async move {
        let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        match options.connect(&url).await {
            Ok(client) => {
                let _ = cell.set(client);
            }
            Err(e) => tracing::error!(error = %e, "cannot connect to NATS"),
        }
    });
}

/// The whole HTTP surface: API, OpenAPI document and docs page, with middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = routes::api().split_for_parts();
    let x_request_id = HeaderName::from_static("x-request-id");
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn(log_internal_errors))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(crate::error::ApiError::Internal(
                anyhow::anyhow!("a request handler panicked"),
            ))
        }))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // Path only: query strings are logged nowhere, headers (tokens) never.
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %request.method(),
                        path = %request.uri().path(), request_id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves the API on `listener` and runs the hold-expiry timer until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let timer = tokio::spawn(timer::run(
        state.pool.clone(),
        state.writers.clone(),
        shutdown.clone(),
    ));
    let app = router(state);
    tracing::info!(addr = %listener.local_addr()?, "marquee is serving");
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("HTTP server failed")?;
    shutdown.cancel();
    let _ = timer.await;
    Ok(())
}
