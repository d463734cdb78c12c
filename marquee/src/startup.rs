//! Building and running the engine from injected resources, so tests build exactly what the
//! binary runs. The HTTP surface it serves is [`marquee_api::app`]'s.
//!
//! The engine has three roles that one process runs together by default and that can run
//! alone for scale-out: the API (with the hold-expiry timer), the relay, and the projector.

use crate::timer;
use anyhow::Context;
use marquee_api::app::{api_routes, metrics_router, router, with_middleware};
use marquee_api::auth::{bootstrap_admin, signing_secret, TokenKeys};
use marquee_api::config::Config;
use marquee_api::state::{AppState, Shared};
use marquee_api::{metrics, server};
use marquee_event_store::db;
use marquee_event_store::event_store::EventStore;
use marquee_event_store::writer::Writers;
use marquee_nats::relay::Relay;
use marquee_nats::Namespace;
use marquee_payments::processor::TestCardProcessor;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let hashes = marquee_api::passwords::Hashes::new(config.hash_limits);
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
        background.spawn(marquee_payments::reconcile::run(
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
