//! The hot showtime: many customers grabbing seats of one showtime at once, against the
//! engine in its different writer designs, run interleaved so machine drift hits all alike.
//!
//! Each design runs the real HTTP API (in this process, API role only, a fresh database per
//! run) and gets the same load: every client has its own account and token and loops
//! closed: hold 1 or 2 seats (uniform, or Zipf-skewed towards the centre), then pay (5%),
//! release (70%) or let the hold expire (25%, holds last 5 s). After each run the showtime's
//! events are audited: no seat in two live holds, none sold twice.

use futures::future::join_all;
use futures::StreamExt;
use hdrhistogram::Histogram;
use marquee_api::config::Config;
use marquee_api::startup::{self, Roles};
use marquee_api::writer::WriterMode;
use marquee_domain::showtime::ShowtimeEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How customers choose seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    Uniform,
    Zipf,
}

/// A design under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Design {
    /// The engine: batched single writer per showtime.
    E,
    /// The stock cqrs-es way: load, decide, append, retry on conflict.
    N1,
}

const ROWS: usize = 20;
const PER_ROW: usize = 25;
const ADMIN: (&str, &str) = ("bench-admin@marquee.test", "bench-admin-password");

/// One run's outcome.
pub struct Outcome {
    pub design: Design,
    pub clients: usize,
    pub choice: Choice,
    pub seconds: f64,
    pub holds: u64,
    pub attempts: u64,
    pub taken: u64,
    pub shed: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
    pub violations: usize,
}

impl Outcome {
    pub fn row(&self) -> String {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {:?} | {} | {:?} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            self.design,
            self.clients,
            self.choice,
            self.holds as f64 / self.seconds,
            self.attempts as f64 / self.seconds,
            self.taken,
            self.shed,
            self.errors,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.violations
        )
    }
}

pub const HEADER: &str = "| design | clients | seats | holds/s | attempts/s | seat taken (409) | shed (503) | errors | p50 ms | p99 ms | p99.9 ms | double bookings |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Starts the API of a fresh engine; returns its base URL, pool and a stop switch.
async fn engine(
    server: &str,
    design: Design,
) -> anyhow::Result<(String, sqlx::PgPool, CancellationToken, String)> {
    let name = format!("marquee_bench_hot_{}", uuid::Uuid::new_v4().simple());
    let mut config = Config::from_vars(|_| None)?;
    config.database_url = format!("{server}/{name}");
    config.namespace = format!("bench{}", &name[name.len() - 8..]);
    config.hold_for = Duration::from_secs(5);
    config.admin = Some((ADMIN.0.into(), ADMIN.1.into()));
    config.rate_limits = None; // thousands of customers from one address, on purpose
    config.writer_mode = match design {
        Design::E => WriterMode::Batched,
        Design::N1 => WriterMode::Direct,
    };
    let state = startup::build_state(config).await?;
    let pool = state.pool.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let api = Roles {
        api: true,
        relay: false,
        projector: false,
    };
    tokio::spawn(startup::run(Some(listener), state, api, stop.clone()));
    Ok((base, pool, stop, name))
}

async fn token(client: &Client, base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let r: Value = client
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    Ok(r["access_token"].as_str().unwrap_or_default().to_owned())
}

async fn post(client: &Client, url: String, token: &str, body: Value) -> anyhow::Result<Value> {
    Ok(client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?)
}

/// A 500-seat theater, a movie and a showtime tomorrow; returns the showtime id.
async fn showtime(client: &Client, base: &str) -> anyhow::Result<String> {
    let admin = token(client, base, ADMIN.0, ADMIN.1).await?;
    let layout: Vec<String> = (0..ROWS).map(|_| "s".repeat(PER_ROW)).collect();
    let theater = post(
        client,
        format!("{base}/v1/theaters"),
        &admin,
        json!({
        "name": "Bench Palace", "address": "1 Bench St", "city": "Benchville",
        "location": {"lat": 40.0, "lon": -74.0}, "timezone": "America/New_York",
        "screens": [{"name": "Big", "layout": layout}]}),
    )
    .await?;
    let movie = post(
        client,
        format!("{base}/v1/movies"),
        &admin,
        json!({"title": "Opening Night", "runtime_minutes": 150}),
    )
    .await?;
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let st = post(client, format!("{base}/v1/showtimes"), &admin, json!({
        "movie_id": movie["id"], "theater_id": theater["id"], "screen_id": theater["screens"][0]["id"],
        "starts_at": starts, "prices": {"standard": {"amount": 1500, "currency": "USD"}}})).await?;
    st["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no showtime: {st}"))
}

/// Registers `n` customers, a few at a time (password hashing is deliberately slow).
async fn customers(client: &Client, base: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let tokens: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let email = format!("customer{i}@bench.test");
            client
                .post(format!("{base}/v1/users"))
                .json(&json!({"email": email, "password": "bench-password", "name": "Bench"}))
                .send()
                .await?;
            token(client, base, &email, "bench-password").await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    tokens.into_iter().collect()
}

/// Seats ranked by distance from the centre of the screen, nearest first.
fn seats_by_centre() -> Vec<String> {
    let mut seats: Vec<(f64, String)> = (0..ROWS)
        .flat_map(|r| (0..PER_ROW).map(move |s| (r, s)))
        .map(|(r, s)| {
            let (dr, ds) = (
                r as f64 - ROWS as f64 * 0.6,
                s as f64 - (PER_ROW as f64 - 1.0) / 2.0,
            );
            let row = marquee_domain::seating::row_name(r);
            (dr * dr + ds * ds, format!("{row}{}", s + 1))
        })
        .collect();
    seats.sort_by(|a, b| a.0.total_cmp(&b.0));
    seats.into_iter().map(|(_, s)| s).collect()
}

/// Samples seat ranks: uniform, or Zipf with exponent 1.1 (rank 1, the centre, most wanted).
struct Picker {
    seats: Vec<String>,
    cdf: Option<Vec<f64>>,
}

impl Picker {
    fn new(choice: Choice) -> Self {
        let seats = seats_by_centre();
        let cdf = (choice == Choice::Zipf).then(|| {
            let weights: Vec<f64> = (1..=seats.len())
                .map(|k| 1.0 / (k as f64).powf(1.1))
                .collect();
            let total: f64 = weights.iter().sum();
            weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w / total;
                    Some(*acc)
                })
                .collect()
        });
        Self { seats, cdf }
    }

    fn pick(&self, rng: &mut StdRng) -> &str {
        let i = match &self.cdf {
            None => rng.gen_range(0..self.seats.len()),
            Some(cdf) => {
                let u: f64 = rng.gen();
                cdf.partition_point(|c| *c < u).min(self.seats.len() - 1)
            }
        };
        &self.seats[i]
    }
}

#[derive(Default)]
struct Tally {
    holds: u64,
    attempts: u64,
    taken: u64,
    shed: u64,
    errors: u64,
}

async fn client_loop(
    client: Client,
    base: Arc<str>,
    showtime: Arc<str>,
    token: String,
    picker: Arc<Picker>,
    seed: u64,
    until: Instant,
) -> (Tally, Histogram<u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    while Instant::now() < until {
        let mut seats = vec![picker.pick(&mut rng).to_owned()];
        if rng.gen_bool(0.5) {
            let other = picker.pick(&mut rng).to_owned();
            if other != seats[0] {
                seats.push(other);
            }
        }
        let started = Instant::now();
        let sent = client
            .post(format!("{base}/v1/reservations"))
            .bearer_auth(&token)
            .json(&json!({"showtime_id": &*showtime, "seats": seats}))
            .send()
            .await;
        let _ = latency.record(started.elapsed().as_micros().max(1) as u64);
        tally.attempts += 1;
        let Ok(response) = sent else {
            tally.errors += 1;
            continue;
        };
        match response.status() {
            StatusCode::CREATED => {
                tally.holds += 1;
                let hold: Value = response.json().await.unwrap_or_default();
                let id = hold["id"].as_str().unwrap_or_default().to_owned();
                let roll: f64 = rng.gen();
                if roll < 0.05 {
                    let _ = client
                        .post(format!("{base}/v1/tickets"))
                        .bearer_auth(&token)
                        .json(&json!({"reservation_id": id, "payment": {"card_number": "4242424242424242"}}))
                        .send()
                        .await;
                } else if roll < 0.75 {
                    let _ = client
                        .delete(format!("{base}/v1/reservations/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                }
            }
            StatusCode::CONFLICT => tally.taken += 1,
            StatusCode::SERVICE_UNAVAILABLE => tally.shed += 1,
            _ => tally.errors += 1,
        }
    }
    (tally, latency)
}

/// Audits the showtime's events; returns the broken invariants.
async fn audit(pool: &sqlx::PgPool, showtime: &str) -> anyhow::Result<Vec<String>> {
    let payloads: Vec<Value> = sqlx::query_scalar(
        "select payload from events where aggregate_type = 'Showtime' and aggregate_id = $1 order by sequence",
    )
    .bind(showtime)
    .fetch_all(pool)
    .await?;
    let events: Vec<ShowtimeEvent> = payloads
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    Ok(marquee_domain::audit::audit(&events))
}

/// One run: a fresh engine of `design`, `clients` customers for `seconds`.
pub async fn run(
    server: &str,
    design: Design,
    clients: usize,
    choice: Choice,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let (base, pool, stop, database) = engine(server, design).await?;
    let client = Client::builder().pool_max_idle_per_host(clients).build()?;
    let showtime = showtime(&client, &base).await?;
    let tokens = customers(&client, &base, clients).await?;
    let picker = Arc::new(Picker::new(choice));
    let (base_arc, showtime_arc): (Arc<str>, Arc<str>) =
        (base.as_str().into(), showtime.as_str().into());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let results = join_all(tokens.into_iter().enumerate().map(|(i, token)| {
        tokio::spawn(client_loop(
            client.clone(),
            base_arc.clone(),
            showtime_arc.clone(),
            token,
            picker.clone(),
            i as u64,
            until,
        ))
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for r in results {
        let (t, h) = r?;
        total.holds += t.holds;
        total.attempts += t.attempts;
        total.taken += t.taken;
        total.shed += t.shed;
        total.errors += t.errors;
        latency.add(h)?;
    }
    let violations = audit(&pool, &showtime).await?.len();
    stop.cancel();
    pool.close().await;
    // Each run has its own database; leave none behind.
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("drop database if exists {database} with (force)"))
        .execute(&admin)
        .await?;
    Ok(Outcome {
        design,
        clients,
        choice,
        seconds: elapsed,
        holds: total.holds,
        attempts: total.attempts,
        taken: total.taken,
        shed: total.shed,
        errors: total.errors,
        latency,
        violations,
    })
}
