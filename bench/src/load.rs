//! The load generator: customers holding seats over the real HTTP API, closed or open loop.
//!
//! A customer action is: hold 1 or 2 seats of one of the run's showtimes (uniform, or Zipf 1.1
//! over seats ranked by distance from the centre), then, when the hold succeeded, pay (1%),
//! release (74%) or walk away (25%: the hold expires, or gives way to the customer's next
//! one). Latency is that of the hold. Payments are rare so that a 500-seat showtime lasts a
//! whole run of the fastest design: at 5% the engine sold it out within 10 s, and holds/s
//! then measured the seat supply instead of the design.
//!
//! - Closed loop: each client repeats actions back to back. It finds saturation, but a slow
//!   server slows the clients down, so its latencies flatter the server.
//! - Open loop: actions start on a fixed schedule whatever the server does, and each latency is
//!   measured from the moment the schedule said to send (no coordinated omission).

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How customers choose seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    Uniform,
    Zipf,
}

/// Rows and seats per row of every benchmark screen: 500 seats.
pub const ROWS: usize = 20;
pub const PER_ROW: usize = 25;

/// Every seat label of a benchmark screen.
pub fn all_seats() -> Vec<String> {
    (0..ROWS)
        .flat_map(|r| {
            (1..=PER_ROW).map(move |s| format!("{}{s}", marquee_domain::seating::row_name(r)))
        })
        .collect()
}

/// Seats ranked by distance from the best seat (centre, 60% back), nearest first.
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
pub struct Picker {
    seats: Vec<String>,
    cdf: Option<Vec<f64>>,
}

impl Picker {
    pub fn new(choice: Choice) -> Self {
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

    /// One or two distinct seats.
    fn choose(&self, rng: &mut StdRng) -> Vec<String> {
        let mut seats = vec![self.pick(rng).to_owned()];
        if rng.gen_bool(0.5) {
            let other = self.pick(rng).to_owned();
            if other != seats[0] {
                seats.push(other);
            }
        }
        seats
    }
}

/// What a run's customers saw.
pub struct Tally {
    pub holds: u64,
    pub attempts: u64,
    pub taken: u64,
    pub shed: u64,
    pub errors: u64,
    /// Hold latency in microseconds, of every attempt.
    pub latency: Histogram<u64>,
    /// Hold latency of the attempts that were not shed (answered 201, 409 or an error).
    pub admitted: Histogram<u64>,
    /// How late each action started against its schedule, in microseconds: the load
    /// generator's own falling behind (always about zero in a closed loop), which an open
    /// loop's latencies include.
    pub late: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            holds: 0,
            attempts: 0,
            taken: 0,
            shed: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            admitted: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            late: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.holds += other.holds;
        self.attempts += other.attempts;
        self.taken += other.taken;
        self.shed += other.shed;
        self.errors += other.errors;
        // Both histograms have the same bounds, so adding cannot fail.
        self.latency.add(other.latency).expect("same bounds");
        self.admitted.add(other.admitted).expect("same bounds");
        self.late.add(other.late).expect("same bounds");
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The p99 of admitted attempts in milliseconds.
    pub fn admitted_p99_ms(&self) -> f64 {
        self.admitted.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// The p99 of how late actions started, in milliseconds.
    pub fn late_p99_ms(&self) -> f64 {
        self.late.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn count(&mut self, outcome: &Outcome) {
        let Outcome {
            status,
            latency,
            late,
            ..
        } = *outcome;
        let _ = self.late.record(late.as_micros().max(1) as u64);
        let micros = latency.as_micros().max(1) as u64;
        let _ = self.latency.record(micros);
        if status != Some(StatusCode::SERVICE_UNAVAILABLE) {
            let _ = self.admitted.record(micros);
        }
        self.attempts += 1;
        match status {
            Some(StatusCode::CREATED) => self.holds += 1,
            Some(StatusCode::CONFLICT) => self.taken += 1,
            Some(StatusCode::SERVICE_UNAVAILABLE) => self.shed += 1,
            _ => self.errors += 1,
        }
    }
}

/// One action's hold: its answer (none if it got none), its latency counted from the
/// action's scheduled start, how late it started, and how long a shed customer was asked to
/// wait before trying again (`Retry-After`).
struct Outcome {
    status: Option<StatusCode>,
    latency: Duration,
    late: Duration,
    retry_after: Option<Duration>,
}

/// What every customer of a run shares.
#[derive(Clone)]
pub struct Workload {
    pub client: Client,
    pub base: Arc<str>,
    /// `{base}/v1/reservations` and `{base}/v1/tickets`, parsed once rather than per request.
    pub reservations: reqwest::Url,
    pub tickets: reqwest::Url,
    pub showtimes: Arc<[String]>,
    pub picker: Arc<Picker>,
    /// Unexpected answers told of so far.
    pub reported: Arc<std::sync::atomic::AtomicU64>,
}

impl Workload {
    /// Holds seats; on success pays, releases or walks away. The hold's latency counts from
    /// `since`, the action's scheduled start.
    async fn act(&self, token: &str, rng: &mut StdRng, since: Instant) -> Outcome {
        let late = since.elapsed();
        let (status, latency, retry_after) = self.hold_and_follow_up(token, rng, since).await;
        Outcome {
            status,
            latency,
            late,
            retry_after,
        }
    }

    async fn hold_and_follow_up(
        &self,
        token: &str,
        rng: &mut StdRng,
        since: Instant,
    ) -> (Option<StatusCode>, Duration, Option<Duration>) {
        let showtime = &self.showtimes[rng.gen_range(0..self.showtimes.len())];
        let seats = self.picker.choose(rng);
        let sent = self
            .client
            .post(self.reservations.clone())
            .bearer_auth(token)
            .json(&json!({"showtime_id": showtime, "seats": seats}))
            .send()
            .await;
        let latency = since.elapsed();
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                self.report(&Chain(&e));
                return (None, latency, None);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        if !matches!(
            status,
            StatusCode::CREATED | StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let body = response.text().await.unwrap_or_default();
            self.report(&format!("{status}: {body}"));
            return (Some(status), latency, retry_after);
        }
        if status == StatusCode::CREATED {
            let hold: Value = response.json().await.unwrap_or_default();
            let id = hold["id"].as_str().unwrap_or_default();
            self.follow_up(token, id, rng.gen()).await;
        } else {
            // Read every answer to its end, as a client does: a connection whose response
            // body was left unread cannot be reused, and each following request would pay
            // a new TCP connection (which had filled the port range with TIME_WAIT sockets).
            let _ = response.bytes().await;
        }
        (Some(status), latency, retry_after)
    }

    /// Tells of an unexpected answer on stderr, the first few times only: the tables count
    /// errors, this says what they were.
    fn report(&self, what: &dyn std::fmt::Display) {
        if self
            .reported
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            < 5
        {
            eprintln!("hold failed: {what}");
        }
    }

    async fn follow_up(&self, token: &str, reservation: &str, roll: f64) {
        let base = &self.base;
        let sent = if roll < 0.01 {
            self.client
                .post(self.tickets.clone())
                .bearer_auth(token)
                .json(&json!({"reservation_id": reservation,
                              "payment": {"card_number": "4242424242424242"}}))
                .send()
                .await
        } else if roll < 0.75 {
            self.client
                .delete(format!("{base}/v1/reservations/{reservation}"))
                .bearer_auth(token)
                .send()
                .await
        } else {
            return;
        };
        if let Ok(response) = sent {
            let _ = response.bytes().await;
        }
    }
}

/// An error with its causes: reqwest's own message ("error sending request") says little.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Runs a load on a tokio runtime of its own, with two worker threads (the machine's cores),
/// and waits for it.
///
/// The server under test serves from the caller's runtime. Sharing that runtime, the load's
/// customers queued behind the server's tasks and the server's behind theirs, and an open
/// loop's schedule ran late whenever the server was busy, which no real client does. On a
/// runtime apart, the operating system shares the cores between load and server.
///
/// Real customers send from machines of their own, so their requests leave on time however
/// busy the server is. Here they share the cores with it, and at the same priority the
/// operating system makes the load wait for the server as often as the other way round (an
/// open loop at 120% of saturation started its requests over a second late at p99). With
/// `--load-priority high` the load's threads run first whenever they have work, and the
/// server's time lost to them counts in its latencies instead. Raising a priority needs
/// `CAP_SYS_NICE` (root has it); without it the load runs at the normal priority, and says so.
pub async fn apart<F, Fut, T>(load: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    // A thread of its own (not one of the server's blocking pool): the schedule runs on it.
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let run = || {
                raise_priority();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("load")
                    .on_thread_start(raise_priority)
                    .enable_all()
                    .build()?;
                runtime.block_on(load())
            };
            let _ = done.send(run());
        })?;
    result.await?
}

/// The scheduling priority of the load's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// The highest the process may set.
    High,
    /// The server's.
    Normal,
}

static RAISE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the priority of the loads started from now on.
pub fn set_priority(priority: Priority) {
    RAISE.store(
        priority == Priority::High,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Gives the calling thread the highest scheduling priority, if asked to, or says once that
/// it could not.
fn raise_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority};
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !RAISE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Err(e) = set_current_thread_priority(ThreadPriority::Max) {
        WARNED
            .call_once(|| eprintln!("the load runs at normal priority (raising it failed: {e:?})"));
    }
}

/// Every client acts back to back until `seconds` have passed. A client that is shed waits
/// as long as its answer's `Retry-After` asks (as the web pages and any well-behaved client
/// do) before its next action; one that retried at once would spend the server's time on
/// being shed again, and past the engine's admission cap such clients spun: a closed loop of
/// 1,000 clients against a cap of 256 made 246 holds/s where it made 1,396 uncapped.
pub async fn closed_loop(
    work: &Workload,
    tokens: &[String],
    seconds: u64,
) -> anyhow::Result<Tally> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let clients = tokens.iter().enumerate().map(|(i, token)| {
        let (work, token) = (work.clone(), token.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let mut tally = Tally::default();
            while Instant::now() < until {
                let outcome = work.act(&token, &mut rng, Instant::now()).await;
                tally.count(&outcome);
                if let Some(wait) = outcome.retry_after {
                    tokio::time::sleep_until(until.min(Instant::now() + wait).into()).await;
                }
            }
            tally
        })
    });
    let mut total = Tally::default();
    for t in futures::future::join_all(clients).await {
        total.merge(t?);
    }
    Ok(total)
}

/// Most actions an open loop has under way at once, and so most connections it opens.
///
/// The load's connections and the server's ends of them are files of this one process, whose
/// limit is 20,000 here. Unbounded, an open loop whose server fell behind for a moment opened
/// a connection for every action waiting, ran out of files, and the server's accept loop then
/// paused a second at a time (axum does that on `EMFILE`): the run collapsed because load and
/// server share a process, which customers and a server never do. An action that finds this
/// many under way starts when one ends, and its latency still counts from its schedule.
pub const MAX_UNDER_WAY: usize = 4096;

/// Starts `rate` actions per second for `seconds`, customers taken in turn, each latency
/// measured from the action's scheduled start.
pub async fn open_loop(
    work: &Workload,
    tokens: &[String],
    rate: f64,
    seconds: u64,
) -> anyhow::Result<Tally> {
    let started = tokio::time::Instant::now();
    let arrivals = (rate * seconds as f64) as u64;
    let mut running = tokio::task::JoinSet::new();
    let mut total = Tally::default();
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_UNDER_WAY));
    for k in 0..arrivals {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        // Timers are coarse (about 1 ms); an action started late still counts from `due`.
        tokio::time::sleep_until(due).await;
        let under_way = room.clone().acquire_owned().await?;
        let (work, token) = (work.clone(), tokens[k as usize % tokens.len()].clone());
        running.spawn(async move {
            let mut rng = StdRng::seed_from_u64(k);
            let outcome = work.act(&token, &mut rng, due.into_std()).await;
            drop(under_way);
            outcome
        });
        while let Some(done) = running.try_join_next() {
            total.count(&done?);
        }
    }
    while let Some(done) = running.join_next().await {
        total.count(&done?);
    }
    Ok(total)
}
