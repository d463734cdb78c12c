//! Building and running the engine from injected resources, so tests build exactly what the
//! binary runs.
//!
//! The engine has three roles that one process runs together by default and that can run
//! alone for scale-out: the API (with the hold-expiry timer), the relay, and the projector.

use crate::admission;
use crate::auth::{bootstrap_admin, signing_secret, TokenKeys};
use crate::config::Config;
use crate::deadlines::{self, Deadlines};
use crate::error::{method_not_allowed, not_found};
use crate::headers::{ExchangeHeadersLayer, X_REQUEST_ID};
use crate::payment::TestCardProcessor;
use crate::ratelimit::{self, Limiters};
use crate::state::{AppState, Shared};
use crate::{idempotency, metrics, routes, server, timer};
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use marquee_event_store::db;
use marquee_event_store::event_store::EventStore;
use marquee_event_store::writer::Writers;
use marquee_nats::relay::Relay;
use marquee_nats::Namespace;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

/// Largest request body accepted. Every request of the API is small; a big body is a mistake
/// or an attack.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Which parts of the engine a process runs.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    /// HTTP API and hold-expiry timer.
    pub api: bool,
    /// Publishing the event log to JetStream.
    pub relay: bool,
    /// Building the read models from JetStream.
    pub projector: bool,
}

impl Roles {
    /// Everything in one process.
    pub const ALL: Roles = Roles {
        api: true,
        relay: true,
        projector: true,
    };
}

/// Connects to Postgres (creating the database and applying migrations), prepares the token
/// keys and the admin account, and starts connecting to NATS in the background.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let namespace = Namespace::new(&config.namespace).context("MARQUEE_NAMESPACE")?;
    metrics::recorder();
    let pool = db::connect_and_migrate(&config.database_url).await?;
    let secret = signing_secret(&pool, config.jwt_secret.as_deref())
        .await
        .context("cannot load the token signing secret")?;
    let hashes = crate::passwords::Hashes::new(config.hash_limits);
    if let Some((email, password)) = &config.admin {
        bootstrap_admin(&pool, &hashes, email, password).await?;
    }
    let store = EventStore::new(pool.clone());
    Ok(AppState::new(Shared {
        writers: Writers::new(store.clone(), config.showtime_queue, config.writer_mode)
            .context("cannot start the showtime writers' thread")?
            .shedding_after(config.showtime_max_wait)
            .capped_at(config.max_writers)
            .snapshotting_every(config.snapshot_every),
        store,
        keys: Arc::new(TokenKeys::new(&secret)),
        hashes,
        payments: Arc::new(TestCardProcessor {
            pool: pool.clone(),
            latency: config.payment_latency,
            transit: config.payment_transit,
        }),
        config: Arc::new(config),
        nats: Arc::new(tokio::sync::OnceCell::new()),
        namespace,
        live: Default::default(),
        readiness: Default::default(),
        pool,
    }))
}

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

/// The sockets the API role serves on.
pub struct Listeners {
    /// The API, with `/metrics` unless `metrics` is given.
    pub api: TcpListener,
    /// `/metrics` alone (`MARQUEE_METRICS_ADDR`).
    pub metrics: Option<TcpListener>,
}

/// Runs every part of the engine: [`run`] with [`Roles::ALL`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run(Some(listener), state, Roles::ALL, shutdown).await
}

/// Runs the given roles until `shutdown` fires. The API needs a listener; when the
/// configuration gives metrics an address of their own, the API role listens there too.
pub async fn run(
    listener: Option<TcpListener>,
    state: AppState,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = match state.config.metrics_addr {
        Some(addr) if roles.api && listener.is_some() => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (MARQUEE_METRICS_ADDR)"))?,
        ),
        _ => None,
    };
    let listeners = listener.map(|api| Listeners { api, metrics });
    run_on(listeners, state, roles, shutdown).await
}

/// [`run`] on listeners bound by the caller: `/metrics` is on the API's listener unless
/// `listeners.metrics` is given, whatever the configuration says.
pub async fn run_on(
    listeners: Option<Listeners>,
    state: AppState,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A JoinSet: if this future is dropped (the process is going down hard), every role
    // goes with it.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(nats_roles(state.clone(), roles, shutdown.clone()));
    if roles.api {
        background.spawn(timer::run(
            state.pool.clone(),
            state.writers.clone(),
            shutdown.clone(),
        ));
        background.spawn(crate::reconcile::run(
            state.pool.clone(),
            state.writers.clone(),
            state.payments.clone(),
            state.config.payment_timeout,
            shutdown.clone(),
        ));
    }
    let served = match (roles.api, listeners) {
        (true, Some(listeners)) => serve_api(listeners, state, shutdown.clone()).await,
        (true, None) => Err(anyhow::anyhow!("the API role needs a listener")),
        (false, _) => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    shutdown.cancel();
    while background.join_next().await.is_some() {}
    served
}

/// Serves the API, and `/metrics` on a listener of its own if there is one, until `shutdown`.
async fn serve_api(
    listeners: Listeners,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let live = state.live.clone();
    let header_timeout = state.config.header_timeout;
    let app = match listeners.metrics {
        None => router(state),
        Some(_) => with_middleware(api_routes(), state),
    };
    tracing::info!(addr = %listeners.api.local_addr()?, "marquee API is serving");
    // Seat-map streams never end by themselves; end them so shutdown can.
    let end_streams = move || live.close();
    let api = server::serve(
        listeners.api,
        app,
        header_timeout,
        shutdown.clone(),
        end_streams,
    );
    let metrics = async {
        let Some(listener) = listeners.metrics else {
            return Ok(());
        };
        tracing::info!(addr = %listener.local_addr()?, "marquee metrics are serving");
        let app = metrics_router();
        server::serve(listener, app, header_timeout, shutdown.clone(), || {}).await;
        anyhow::Ok(())
    };
    let ((), metrics) = tokio::join!(api, metrics);
    metrics
}

/// Connects to NATS (retrying until it answers), then runs the relay and projectors the roles
/// ask for. The connection is kept in the state for readiness checks.
async fn nats_roles(state: AppState, roles: Roles, shutdown: CancellationToken) {
    let Some(client) = connect_nats(&state.config.nats_url, &shutdown).await else {
        return;
    };
    let _ = state.nats.set(client.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if roles.api {
        let live = state.live.clone();
        tasks.spawn(live.run(
            client.clone(),
            state.namespace.clone(),
            state.writers.clone(),
            shutdown.clone(),
        ));
    }
    if roles.relay {
        let relay = Relay::new(state.pool.clone(), client.clone(), state.namespace.clone());
        tasks.spawn(relay.run(shutdown.clone()));
    }
    if roles.projector {
        tasks.spawn(marquee_projections::tracking::run_all(
            state.pool.clone(),
            client.clone(),
            state.namespace.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn connect_nats(url: &str, shutdown: &CancellationToken) -> Option<async_nats::Client> {
    let mut warned = false;
    loop {
        match async_nats::connect(url).await {
            Ok(client) => return Some(client),
            Err(e) if !warned => {
                tracing::warn!(error = %e, url, "cannot connect to NATS yet; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}
