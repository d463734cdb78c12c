//! A design under test, started fresh for one run: its database, its HTTP API in this process,
//! its showtimes and its customers' tokens; audited and torn down afterwards.

use crate::baselines::redis::{RedisServer, RedisStore};
use crate::baselines::sql::SqlStore;
use crate::baselines::{self, SeatStore};
use crate::load::{all_seats, PER_ROW, ROWS};
use marquee::startup::{self, Roles};
use marquee_api::auth::TokenKeys;
use marquee_api::config::Config;
use marquee_api::state::AppState;
use marquee_domain::showtime::ShowtimeEvent;
use marquee_domain::{Currency, Money, SeatLabel, ShowtimeId, UserId};
use marquee_event_store::writer::WriterMode;
use reqwest::Client;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A design under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Design {
    /// The engine: batched single writer per showtime.
    E,
    /// The stock cqrs-es way: load, decide, append, retry on conflict.
    N1,
    /// The conventional SQL way: seat rows locked with `SELECT ... FOR UPDATE`.
    N2,
    /// The seed design: Redis seat locks in a Lua script, `appendfsync always`.
    R,
}

const ADMIN: (&str, &str) = ("bench-admin@marquee.test", "bench-admin-password");
/// The run's token signing secret, so the benchmark can give each customer a token without
/// registering thousands of accounts (argon2 hashing would take minutes per run); the API
/// checks these tokens exactly like the ones it issues.
const JWT_SECRET: &str = "marquee-bench-signing-secret-of-at-least-32-bytes";
/// The price of every benchmark seat, in cents.
const PRICE: i64 = 1500;

/// One running design.
pub struct Target {
    pub base: String,
    pub showtimes: Vec<String>,
    pub tokens: Vec<String>,
    pool: sqlx::PgPool,
    database: String,
    server: String,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: Option<Arc<dyn SeatStore>>,
    redis: Option<RedisServer>,
    /// The NATS server and JetStream stream of a run that publishes its events.
    stream: Option<(String, String)>,
}

impl Target {
    /// Starts `design` on a fresh database with `showtimes` showtimes of 500 seats and
    /// `customers` tokens. `roles` are the engine's roles (the API alone for booking runs).
    pub async fn start(
        server: &str,
        design: Design,
        roles: Roles,
        showtimes: usize,
        customers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(server, design, roles, showtimes, customers, |_| {}).await
    }

    /// [`Target::start`] with the engine's configuration changed by `tune` first.
    pub async fn start_with(
        server: &str,
        design: Design,
        roles: Roles,
        showtimes: usize,
        customers: usize,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let database = format!("marquee_bench_hot_{}", uuid::Uuid::new_v4().simple());
        let mut config = config(server, &database, design)?;
        tune(&mut config);
        let stream = (roles.relay || roles.projector).then(|| {
            let ns = marquee_nats::Namespace::new(&config.namespace).expect("a valid namespace");
            (config.nats_url.clone(), ns.stream())
        });
        let state = startup::build_state(config).await?;
        let pool = state.pool.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let (store, redis) = baseline(server, &database, design).await?;
        let served = serve(listener, state, roles, &stop, store.as_ref());
        let mut target = Self {
            base,
            showtimes: Vec::new(),
            tokens: Vec::new(),
            pool,
            database,
            server: server.to_owned(),
            stop,
            served,
            store,
            redis,
            stream,
        };
        target.showtimes = target.schedule(showtimes).await?;
        target.tokens = customer_tokens(customers);
        target.prepare_store().await?;
        Ok(target)
    }

    /// Gives a baseline's store the run's showtimes and their seats (the engine needs nothing).
    async fn prepare_store(&self) -> anyhow::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let ids: Vec<ShowtimeId> = self
            .showtimes
            .iter()
            .map(|s| s.parse().map(ShowtimeId))
            .collect::<Result<_, _>>()?;
        let seats: Vec<SeatLabel> = all_seats()
            .iter()
            .map(|s| SeatLabel::parse(s))
            .collect::<Result<_, _>>()?;
        store.prepare(&ids, &seats, &price()).await
    }

    /// The admin's token, from the API.
    pub async fn admin_token(&self, client: &Client) -> anyhow::Result<String> {
        token(client, &self.base, ADMIN.0, ADMIN.1).await
    }

    /// A 500-seat theater, a movie and `n` showtimes of it, four hours apart from tomorrow on.
    async fn schedule(&self, n: usize) -> anyhow::Result<Vec<String>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let client = Client::new();
        let base = &self.base;
        let admin = self.admin_token(&client).await?;
        let layout: Vec<String> = (0..ROWS).map(|_| "s".repeat(PER_ROW)).collect();
        let theater = post(
            &client,
            format!("{base}/v1/theaters"),
            &admin,
            json!({
            "name": "Bench Palace", "address": "1 Bench St", "city": "Benchville",
            "location": {"lat": 40.0, "lon": -74.0}, "timezone": "America/New_York",
            "screens": [{"name": "Big", "layout": layout}]}),
        )
        .await?;
        let movie = post(
            &client,
            format!("{base}/v1/movies"),
            &admin,
            json!({"title": "Opening Night", "runtime_minutes": 150}),
        )
        .await?;
        let first = chrono::Utc::now() + chrono::TimeDelta::days(1);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let starts = first + chrono::TimeDelta::hours(4 * i as i64);
            let st = post(
                &client,
                format!("{base}/v1/showtimes"),
                &admin,
                json!({
                "movie_id": movie["id"], "theater_id": theater["id"],
                "screen_id": theater["screens"][0]["id"], "starts_at": starts,
                "prices": {"standard": {"amount": PRICE, "currency": "USD"}}}),
            )
            .await?;
            let id = st["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no showtime: {st}"))?;
            ids.push(id.to_owned());
        }
        Ok(ids)
    }

    /// Every broken invariant in the histories of the run's showtimes.
    pub async fn audit(&self) -> anyhow::Result<Vec<String>> {
        let mut violations = Vec::new();
        for showtime in &self.showtimes {
            let events = self.history(showtime).await?;
            violations.extend(marquee_domain::audit::audit(&events));
        }
        Ok(violations)
    }

    async fn history(&self, showtime: &str) -> anyhow::Result<Vec<ShowtimeEvent>> {
        if let Some(store) = &self.store {
            return store.history(ShowtimeId(showtime.parse()?)).await;
        }
        let payloads: Vec<Value> = sqlx::query_scalar(
            "select payload from events where aggregate_type = 'Showtime' and aggregate_id = $1 order by sequence",
        )
        .bind(showtime)
        .fetch_all(&self.pool)
        .await?;
        Ok(payloads
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?)
    }

    /// Stops the API (and Redis) and drops the run's database.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.served).await;
        drop(self.store);
        if let Some(redis) = self.redis {
            redis.stop().await;
        }
        self.pool.close().await;
        if let Some((url, stream)) = self.stream {
            // The shared NATS would otherwise keep every run's stream and consumers.
            let js = async_nats::jetstream::new(async_nats::connect(url).await?);
            let _ = js.delete_stream(stream).await;
        }
        let admin = sqlx::PgPool::connect(&database_url(&self.server, "postgres")).await?;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            self.database
        ))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// Serves the engine on `listener` (its API, and whichever other `roles`), or a baseline's
/// store behind the same API, until `stop`.
fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    roles: Roles,
    stop: &CancellationToken,
    store: Option<&Arc<dyn SeatStore>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    match store {
        None => tokio::spawn(startup::run(Some(listener), state, roles, stop.clone())),
        Some(store) => {
            let app = baselines::router(store.clone(), state);
            let stopped = stop.clone().cancelled_owned();
            tokio::spawn(async move {
                // As the engine serves: its middleware may read the client's address.
                let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await?;
                Ok(())
            })
        }
    }
}

/// The URL of `database` on `server`, which may carry connection options after a `?`
/// (`postgres://root@127.0.0.1:5432?sslmode=disable`): they go after the database name.
pub fn database_url(server: &str, database: &str) -> String {
    match server.split_once('?') {
        Some((address, options)) => format!("{address}/{database}?{options}"),
        None => format!("{server}/{database}"),
    }
}

/// The engine's configuration for a run: holds of 5 s, so expiries happen within a run.
fn config(server: &str, database: &str, design: Design) -> anyhow::Result<Config> {
    // One address sends all the load, so rate limiting must be off. Other settings come from
    // the environment (e.g. MARQUEE_SHOWTIME_MAX_WAIT_MS, to compare shedding settings).
    let mut config = Config::from_vars(|var| match var {
        "MARQUEE_RATE_LIMITS" => Some("off".into()),
        "MARQUEE_JWT_SECRET" => Some(JWT_SECRET.into()),
        _ => std::env::var(var)
            .ok()
            .filter(|v| var != "DATABASE_URL" && !v.is_empty()),
    })?;
    config.database_url = database_url(server, database);
    config.namespace = format!("bench{}", &database[database.len() - 8..]);
    config.hold_for = Duration::from_secs(5);
    // The load's customers hold again the moment they let go, thousands of times a run: with
    // a cooldown each would be refused after its first 5 s and sleep out the Retry-After.
    // Without one the rule still applies (a renewal never extends a live hold), and the
    // baselines, which know no such rule, are compared like for like.
    config.hold_cooldown = Duration::ZERO;
    config.admin = Some((ADMIN.0.into(), ADMIN.1.into()));
    config.writer_mode = match design {
        Design::N1 => WriterMode::Direct,
        _ => WriterMode::Batched,
    };
    Ok(config)
}

/// The seat store of a baseline design (and the Redis server it runs on), none for the engine.
async fn baseline(
    server: &str,
    database: &str,
    design: Design,
) -> anyhow::Result<(Option<Arc<dyn SeatStore>>, Option<RedisServer>)> {
    Ok(match design {
        Design::E | Design::N1 => (None, None),
        Design::N2 => {
            let store = SqlStore::create(&database_url(server, database)).await?;
            (Some(Arc::new(store)), None)
        }
        Design::R => {
            let redis = RedisServer::start().await?;
            let store = RedisStore::connect(&redis, price()).await?;
            (Some(Arc::new(store)), Some(redis))
        }
    })
}

fn price() -> Money {
    Money::new(PRICE, Currency::parse("USD").expect("a valid code")).expect("a valid price")
}

/// One customer token each, signed with the run's secret.
fn customer_tokens(n: usize) -> Vec<String> {
    let keys = TokenKeys::new(JWT_SECRET.as_bytes());
    let customer = vec!["customer".to_owned()];
    (0..n)
        .map(|_| keys.issue(UserId(uuid::Uuid::now_v7()), &customer))
        .collect()
}

/// Logs in through the API.
async fn token(client: &Client, base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let r: Value = client
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    r["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token: {r}"))
}

/// A JSON POST with a bearer token; the answer's body.
pub async fn post(client: &Client, url: String, token: &str, body: Value) -> anyhow::Result<Value> {
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!("POST {url} answered {status}: {answer}");
    }
    Ok(answer)
}
