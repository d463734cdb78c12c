//! Browsing: customers searching theaters and movies near them and looking at seat maps, the
//! reads that outnumber bookings by far. Runs against the whole engine (API, relay and
//! projections, on the shared NATS), since searches are served from read models.
//!
//! The catalog is 20 theaters within about 20 km of a point, 10 movies and 100 showtimes;
//! once the read models show all of it, every client reads back to back for the run's
//! seconds: theaters near the point, movies near the point, or one showtime's seat map.

use crate::load::{PER_ROW, ROWS};
use crate::target::{post, Design, Target};
use hdrhistogram::Histogram;
use marquee::startup::Roles;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THEATERS: usize = 20;
const MOVIES: usize = 10;
const SHOWTIMES_PER_THEATER: usize = 5;
/// The point customers search from, and the radius.
const HERE: (f64, f64, f64) = (40.0, -74.0, 50.0);

/// The kinds of read.
const KINDS: [&str; 3] = ["theaters near", "movies near", "seat map"];

/// Runs the browse scenario at each client count and prints its table.
pub async fn run(server: &str, clients: &[usize], seconds: u64) -> anyhow::Result<()> {
    println!("\n## Browse (reads), the whole engine\n");
    println!("| clients | read | reads/s | errors | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|");
    for &n in clients {
        let target = Target::start(server, Design::E, Roles::ALL, 0, 0).await?;
        let result = browse(&target, n, seconds).await;
        target.stop().await?;
        let (elapsed, tallies) = result?;
        let failed: u64 = tallies.iter().map(|t| t.errors).sum();
        for (kind, t) in KINDS.iter().zip(&tallies) {
            let ms = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "| {n} | {kind} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
                t.latency.len() as f64 / elapsed,
                t.errors,
                ms(0.5),
                ms(0.99),
                ms(0.999)
            );
        }
        anyhow::ensure!(failed == 0, "{failed} reads failed");
    }
    Ok(())
}

#[derive(Clone)]
struct ReadTally {
    latency: Histogram<u64>,
    errors: u64,
}

async fn browse(
    target: &Target,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Vec<ReadTally>)> {
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
    let showtimes: Arc<[String]> = catalog(target, &client).await?.into();
    wait_for_read_models(&client, &target.base, showtimes.len()).await?;
    let urls = Arc::new(Urls::new(&target.base));
    // The readers run apart from the engine's runtime, as the booking load does.
    crate::load::apart(move || async move {
        // A client of its own: connections live on the runtime that opened them.
        let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let (client, urls, showtimes) = (client.clone(), urls.clone(), showtimes.clone());
                tokio::spawn(
                    async move { reader(client, &urls, &showtimes, i as u64, until).await },
                )
            })
            .collect();
        let mut total = vec![empty(); KINDS.len()];
        for t in futures::future::join_all(tasks).await {
            for (sum, part) in total.iter_mut().zip(t?) {
                sum.latency.add(part.latency)?;
                sum.errors += part.errors;
            }
        }
        Ok((started.elapsed().as_secs_f64(), total))
    })
    .await
}

fn empty() -> ReadTally {
    ReadTally {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        errors: 0,
    }
}

struct Urls {
    theaters: String,
    movies: String,
    base: String,
}

impl Urls {
    fn new(base: &str) -> Self {
        let (lat, lon, r) = HERE;
        Self {
            theaters: format!("{base}/v1/theaters?lat={lat}&lon={lon}&radius_km={r}"),
            movies: format!("{base}/v1/movies?lat={lat}&lon={lon}&radius_km={r}"),
            base: base.to_owned(),
        }
    }
}

async fn reader(
    client: Client,
    urls: &Urls,
    showtimes: &[String],
    seed: u64,
    until: Instant,
) -> Vec<ReadTally> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tallies = vec![empty(); KINDS.len()];
    while Instant::now() < until {
        let kind = rng.gen_range(0..KINDS.len());
        let url = match kind {
            0 => urls.theaters.clone(),
            1 => urls.movies.clone(),
            _ => {
                let showtime = &showtimes[rng.gen_range(0..showtimes.len())];
                format!("{}/v1/showtimes/{showtime}/seats", urls.base)
            }
        };
        let started = Instant::now();
        let ok = match client.get(url).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        let t = &mut tallies[kind];
        let _ = t
            .latency
            .record(started.elapsed().as_micros().max(1) as u64);
        t.errors += u64::from(!ok);
    }
    tallies
}

/// Theaters around the point, movies, and showtimes of them; returns the showtime ids.
async fn catalog(target: &Target, client: &Client) -> anyhow::Result<Vec<String>> {
    let admin = target.admin_token(client).await?;
    let base = &target.base;
    let layout: Vec<String> = (0..ROWS).map(|_| "s".repeat(PER_ROW)).collect();
    let mut movies = Vec::new();
    for m in 0..MOVIES {
        let movie = post(
            client,
            format!("{base}/v1/movies"),
            &admin,
            json!({"title": format!("Feature {m}"), "runtime_minutes": 120, "genres": ["drama"]}),
        )
        .await?;
        movies.push(movie["id"].clone());
    }
    let first = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let mut showtimes = Vec::new();
    for t in 0..THEATERS {
        // Spread over about ±0.18° (20 km) around the point.
        let (lat, lon) = (
            HERE.0 + (t as f64 * 0.37).sin() * 0.18,
            HERE.1 + (t as f64 * 0.73).cos() * 0.18,
        );
        let theater = post(
            client,
            format!("{base}/v1/theaters"),
            &admin,
            json!({
            "name": format!("Cinema {t}"), "address": format!("{t} Main St"), "city": "Benchville",
            "location": {"lat": lat, "lon": lon}, "timezone": "America/New_York",
            "screens": [{"name": "One", "layout": layout}]}),
        )
        .await?;
        for s in 0..SHOWTIMES_PER_THEATER {
            let st = post(
                client,
                format!("{base}/v1/showtimes"),
                &admin,
                json!({
                "movie_id": movies[(t + s) % MOVIES], "theater_id": theater["id"],
                "screen_id": theater["screens"][0]["id"],
                "starts_at": first + chrono::TimeDelta::hours(4 * s as i64),
                "prices": {"standard": {"amount": 1500, "currency": "USD"}}}),
            )
            .await?;
            let id = st["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no showtime: {st}"))?;
            showtimes.push(id.to_owned());
        }
    }
    Ok(showtimes)
}

/// Waits until the movie search lists every showtime (the projections have caught up).
async fn wait_for_read_models(client: &Client, base: &str, showtimes: usize) -> anyhow::Result<()> {
    let url = Urls::new(base).movies;
    for _ in 0..240 {
        let listed: Value = client.get(&url).send().await?.json().await?;
        let count: usize = listed["movies"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| m["showtimes"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        if count >= showtimes {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the read models did not show the catalog within a minute")
}
