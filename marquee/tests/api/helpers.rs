//! `spawn_app()`: the engine on a random port with its own database, plus helpers that drive
//! it the way a client would.

use marquee::startup::{self, Roles};
use marquee_api::config::Config;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use marquee_test_support::fresh_database_url;

/// Namespaces of test runs start with this.
const TEST_PREFIX: &str = "mqt";

pub const ADMIN_EMAIL: &str = "admin@marquee.test";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A configuration for tests on the database at `database_url` (which the engine creates if
/// it is missing), with short defaults.
pub fn test_config(database_url: &str) -> Config {
    Config {
        database_url: database_url.to_owned(),
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        // Short (a namespace is at most 32 characters) and marked, so old test streams can be
        // told apart and removed.
        namespace: format!("{TEST_PREFIX}{}", &database_url[database_url.len() - 12..]),
        hold_for: Duration::from_secs(420),
        hold_cooldown: Duration::from_secs(300),
        payment_pin: Duration::from_secs(600),
        admin: Some((ADMIN_EMAIL.into(), ADMIN_PASSWORD.into())),
        jwt_secret: None,
        payment_latency: Duration::ZERO,
        payment_transit: Duration::ZERO,
        payment_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(60),
        showtime_queue: 4096,
        max_writers: marquee_event_store::writer_registry::DEFAULT_MAX_WRITERS,
        snapshot_every: marquee_event_store::writer::DEFAULT_SNAPSHOT_EVERY,
        showtime_max_wait: None,
        max_in_flight: None,
        // Tests share two cores: a busy moment must not shed their requests.
        max_lag: None,
        writer_mode: marquee_event_store::writer::WriterMode::Batched,
        // Tests drive many requests from one address; `security.rs` turns limits on itself.
        rate_limits: None,
        proxy_hops: 0,
        // A busy moment must not refuse tests' logins; `security.rs` tests the bound itself.
        hash_limits: marquee_api::passwords::HashLimits {
            wait: Duration::from_secs(30),
            ..Default::default()
        },
    }
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub pool: sqlx::PgPool,
    pub config: Config,
    /// The engine's own state, for what only it can tell (how many writers run, say).
    pub state: marquee_api::state::AppState,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the engine with a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_with(test_config(&fresh_database_url())).await
}

/// Starts the engine with a given configuration (e.g. a second process on the same database).
pub async fn spawn_with(config: Config) -> TestApp {
    spawn_roles(config, Roles::ALL).await
}

/// Starts the API (and whichever other roles) of the engine.
pub async fn spawn_roles(config: Config, roles: Roles) -> TestApp {
    remove_old_test_streams(&config.nats_url).await;
    let state = startup::build_state(config.clone())
        .await
        .expect("engine builds");
    let pool = state.pool.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(startup::run(
        Some(listener),
        state.clone(),
        roles,
        shutdown.clone(),
    ));
    TestApp {
        base,
        client: Client::new(),
        pool,
        config,
        state,
        shutdown,
    }
}

/// Starts the engine with `/metrics` on a listener of its own, as `MARQUEE_METRICS_ADDR` has
/// it; returns the app and the base URL of the metrics listener.
pub async fn spawn_with_metrics_listener() -> (TestApp, String) {
    let config = test_config(&fresh_database_url());
    remove_old_test_streams(&config.nats_url).await;
    let state = startup::build_state(config.clone())
        .await
        .expect("engine builds");
    let pool = state.pool.clone();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", api.local_addr().unwrap());
    let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let listeners = startup::Listeners {
        api,
        metrics: Some(metrics),
    };
    tokio::spawn(startup::run_on(
        Some(listeners),
        state.clone(),
        Roles::ALL,
        shutdown.clone(),
    ));
    let app = TestApp {
        base,
        client: Client::new(),
        pool,
        config,
        state,
        shutdown,
    };
    (app, metrics_base)
}

/// Runs roles without the API (relay, projector) as a task that can be aborted like a crash.
pub async fn spawn_background(
    config: &Config,
    roles: Roles,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let state = startup::build_state(config.clone())
        .await
        .expect("engine builds");
    tokio::spawn(startup::run(None, state, roles, CancellationToken::new()))
}

/// Deletes the JetStream streams that earlier test runs left, once per test process (before
/// this process creates any of its own).
async fn remove_old_test_streams(url: &str) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        use futures::TryStreamExt;
        let client = async_nats::connect(url).await.expect("NATS is running");
        let js = async_nats::jetstream::new(client);
        let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
        for name in names.iter().filter(|n| n.starts_with(TEST_PREFIX)) {
            let _ = js.delete_stream(name).await;
        }
    })
    .await;
}

/// Polls `count` every 20 ms until it is zero; panics with `what` after 30 seconds.
async fn wait_until_zero<F, Fut>(what: &str, count: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    for _ in 0..1500 {
        if count().await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} within 30 seconds");
}

impl TestApp {
    /// Waits until every read model has applied every stored event (up to 30 s: after a
    /// projector crash its in-flight batch is redelivered only after the ack wait).
    pub async fn settle(&self) {
        let pool = &self.pool;
        wait_until_zero("the read models did not catch up", || async {
            marquee_projections::tracking::unapplied(pool)
                .await
                .unwrap()
        })
        .await;
    }

    /// Waits until every stored event is below the history's horizon (no transaction anywhere
    /// in the cluster that began before it is still open), so history pages include it.
    pub async fn wait_for_history(&self) {
        let pool = &self.pool;
        wait_until_zero("events stayed above the history horizon", || async {
            sqlx::query_scalar(
                "select count(*) from events where tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send(Method::POST, path, token, Some(body)).await
    }

    /// GETs after the read models have caught up, so tests read what they just wrote.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.settle().await;
        self.send(Method::GET, path, token, None).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        self.send(Method::DELETE, path, token, None).await
    }

    pub async fn token(&self, email: &str, password: &str) -> String {
        let r = self
            .post(
                "/v1/auth/token",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn admin(&self) -> String {
        self.token(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers a customer and returns their token.
    pub async fn customer(&self) -> String {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let r = self
            .post(
                "/v1/users",
                None,
                &json!({"email": email, "password": "password123", "name": "Test Customer"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        self.token(&email, "password123").await
    }

    /// A theater with one screen (rows A, B standard; C premium), a movie, and a showtime
    /// tomorrow. Returns the showtime id.
    pub async fn showtime(&self) -> String {
        self.showtime_with_layout(&["ssss.ssss", "ssss.ssss", "pppp.pppp"])
            .await
    }

    pub async fn showtime_with_layout(&self, layout: &[&str]) -> String {
        let admin = self.admin().await;
        let theater = self.theater(&admin, layout).await;
        let movie = self.movie(&admin).await;
        let starts = chrono::Utc::now() + chrono::TimeDelta::days(1);
        let r = self
            .post(
                "/v1/showtimes",
                Some(&admin),
                &json!({
                    "movie_id": movie, "theater_id": theater["id"],
                    "screen_id": theater["screens"][0]["id"], "starts_at": starts,
                    "prices": prices(),
                }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn theater(&self, admin: &str, layout: &[&str]) -> Value {
        let r = self
            .post(
                "/v1/theaters",
                Some(admin),
                &json!({
                    "name": "Roxy", "address": "12 Main St", "city": "Springfield",
                    "location": {"lat": 40.7, "lon": -74.0}, "timezone": "America/New_York",
                    "screens": [{"name": "Screen 1", "layout": layout}],
                }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    pub async fn movie(&self, admin: &str) -> String {
        let r = self
            .post(
                "/v1/movies",
                Some(admin),
                &json!({"title": "Heat", "runtime_minutes": 170}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn hold(&self, token: &str, showtime: &str, seats: &[&str]) -> Response {
        self.post(
            "/v1/reservations",
            Some(token),
            &json!({"showtime_id": showtime, "seats": seats}),
        )
        .await
    }

    /// Holds seats, expecting success, and returns the reservation.
    pub async fn held(&self, token: &str, showtime: &str, seats: &[&str]) -> Value {
        let r = self.hold(token, showtime, seats).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// GETs as JSON at once, without waiting for the read models first.
    /// Holds seats (the hold must succeed) and returns the reservation id.
    pub async fn hold_id(&self, token: &str, showtime: &str, seats: &[&str]) -> String {
        self.held(token, showtime, seats).await["id"]
            .as_str()
            .expect("a reservation id")
            .to_owned()
    }

    pub async fn get_now(&self, path: &str) -> Value {
        self.send(Method::GET, path, None, None)
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn pay(&self, token: &str, reservation: &str, card: &str) -> Response {
        self.post(
            "/v1/tickets",
            Some(token),
            &json!({"reservation_id": reservation, "payment": {"card_number": card}}),
        )
        .await
    }

    /// Every stored event, counted in the table: "a refusal records nothing" must see an
    /// event at once, before it is below the history's horizon, and without an admin login
    /// that would count against the rate limits some tests set.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Every event of the log that `filter` (the query of `GET /v1/events`, e.g.
    /// `aggregate_id=...&event_type=SeatsHeld`) selects, oldest first, read as an admin
    /// through the history API once every stored event is below its horizon.
    pub async fn events(&self, filter: &str) -> Vec<Value> {
        self.wait_for_history().await;
        let admin = self.admin().await;
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/v1/events?{filter}&after={after}&limit=1000");
            let r = self.send(Method::GET, &path, Some(&admin), None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let page: Value = r.json().await.unwrap();
            let batch = page["events"].as_array().unwrap();
            if batch.is_empty() {
                return events;
            }
            events.extend(batch.iter().cloned());
            after = page["next_after"].as_i64().unwrap();
        }
    }

    /// The types of an aggregate's events, in order.
    pub async fn event_types(&self, aggregate_id: &str) -> Vec<String> {
        self.events(&format!("aggregate_id={aggregate_id}"))
            .await
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn seat_statuses(&self, showtime: &str, token: Option<&str>) -> Value {
        let r = self
            .get(&format!("/v1/showtimes/{showtime}/seats"), token)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

pub fn prices() -> Value {
    json!({
        "standard": {"amount": 1250, "currency": "USD"},
        "premium": {"amount": 1800, "currency": "USD"},
    })
}

/// The status of one seat in a seat map.
pub fn seat_status(map: &Value, seat: &str) -> (String, bool) {
    for row in map["rows"].as_array().unwrap() {
        for s in row["seats"].as_array().unwrap() {
            if s["seat"] == seat {
                return (
                    s["status"].as_str().unwrap().to_owned(),
                    s["mine"].as_bool().unwrap_or(false),
                );
            }
        }
    }
    panic!("no seat {seat}")
}

/// Asserts a problem+json answer and returns its body.
pub async fn problem(r: Response, status: u16, slug: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status for {slug}");
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}
