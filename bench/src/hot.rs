//! The hot-showtime benchmark: the engine against its baselines, interleaved so that machine
//! drift hits all alike, with the disk's fsync rate read around each pair of runs.
//!
//! 1. Closed loop on one hot showtime of 500 seats at each client count and seat choice, then
//!    on 100 showtimes (`many`): designs run in the order given (E, N1, E, N2, E, R: each
//!    baseline paired with an engine run just before it), each on a fresh database, and every
//!    run's history is audited; the command fails on any broken invariant.
//! 2. Open loop for the engine at fixed fractions of the saturation the closed loop measured.
//! 3. Browsing (reads) against the whole engine, see [`crate::browse`].

use crate::load::{self, Choice, Picker, Tally, Workload};
use crate::outcome::{Outcome, HEADER};
use crate::target::{Design, Target};
use crate::{browse, chart, fsync, served};
use marquee::startup::Roles;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API role alone: booking runs need no relay or projections.
const API_ONLY: Roles = Roles {
    api: true,
    relay: false,
    projector: false,
};

/// Showtimes of the `many` scenario.
const MANY_SHOWTIMES: usize = 100;

/// What to run.
pub struct Plan {
    pub clients: Vec<usize>,
    pub seats: Vec<Choice>,
    pub designs: Vec<Design>,
    pub seconds: u64,
    pub rounds: usize,
    pub many_clients: Vec<usize>,
    pub open_loads: Vec<u32>,
    /// `MARQUEE_MAX_LAG_MS` of the engine in the open loop, each load run with each; 0 is off.
    pub open_lags: Vec<u64>,
    /// Hold attempts/s the open loop takes as saturation instead of the closed loop's.
    pub saturation: Option<f64>,
    pub browse_clients: Vec<usize>,
    pub fsync_seconds: u32,
    pub chart: Option<PathBuf>,
}

/// Runs the whole plan and prints its tables (markdown) to stdout.
pub async fn run(server: &str, plan: &Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("## Closed loop\n\n{HEADER}");
    let mut outcomes = Vec::new();
    let settings = plan
        .clients
        .iter()
        .map(|&c| (1, c))
        .chain(plan.many_clients.iter().map(|&c| (MANY_SHOWTIMES, c)));
    for (showtimes, clients) in settings {
        for &choice in &plan.seats {
            for _ in 0..plan.rounds {
                for pair in pairs(&plan.designs) {
                    let first = outcomes.len();
                    let before = fsync_reading(plan.fsync_seconds).await?;
                    for &design in pair {
                        let o = closed(server, design, showtimes, clients, choice, plan.seconds)
                            .await?;
                        outcomes.push(o);
                    }
                    let after = fsync_reading(plan.fsync_seconds).await?;
                    for o in &mut outcomes[first..] {
                        o.fsync = (before, after);
                        println!("{}", o.row());
                    }
                    if let Some(bad) = outcomes[first..].iter().find(|o| o.violations > 0) {
                        anyhow::bail!("{:?} broke the booking invariants", bad.design);
                    }
                }
            }
        }
    }
    print_ratios(&outcomes);
    open_loop(server, plan, &outcomes).await?;
    if !plan.browse_clients.is_empty() {
        browse::run(server, &plan.browse_clients, plan.seconds).await?;
    }
    if let Some(path) = &plan.chart {
        chart::write(path, &outcomes)?;
        println!("\nChart: `{}`", path.display());
    }
    println!(
        "\nWhole benchmark: {:.1} minutes.",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// The designs cut into pairs, each starting at an engine run: E, N1 | E, N2 | E, R.
fn pairs(designs: &[Design]) -> Vec<&[Design]> {
    let mut pairs = Vec::new();
    let mut start = 0;
    for i in 1..designs.len() {
        if designs[i] == Design::E {
            pairs.push(&designs[start..i]);
            start = i;
        }
    }
    if start < designs.len() {
        pairs.push(&designs[start..]);
    }
    pairs
}

async fn fsync_reading(seconds: u32) -> anyhow::Result<Option<f64>> {
    if seconds == 0 {
        return Ok(None);
    }
    Ok(Some(fsync::fdatasync_per_second(seconds).await?))
}

/// One closed-loop run of a fresh `design`.
async fn closed(
    server: &str,
    design: Design,
    showtimes: usize,
    clients: usize,
    choice: Choice,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let target = Target::start(server, design, API_ONLY, showtimes, clients).await?;
    let work = workload(&target, choice)?;
    let started = Instant::now();
    let tokens = target.tokens.clone();
    let result =
        load::apart(move || async move { load::closed_loop(&work, &tokens, seconds).await }).await;
    let elapsed = started.elapsed().as_secs_f64();
    let audit = target.audit().await;
    target.stop().await?;
    let violations = audit?;
    for v in violations.iter().take(5) {
        eprintln!("{design:?}: {v}");
    }
    Ok(Outcome {
        showtimes,
        design,
        clients,
        choice,
        seconds: elapsed,
        tally: result?,
        violations: violations.len(),
        fsync: (None, None),
    })
}

fn workload(target: &Target, choice: Choice) -> anyhow::Result<Workload> {
    let client = reqwest::Client::builder()
        // Keep every connection opened (at most one per action under way): closing the
        // ones past a smaller cap made the open loop reconnect at every burst.
        .pool_max_idle_per_host(target.tokens.len().max(load::MAX_UNDER_WAY))
        // A request still unanswered after this long counts as an error.
        .timeout(Duration::from_secs(60))
        .build()?;
    Ok(Workload {
        client,
        base: target.base.as_str().into(),
        reservations: format!("{}/v1/reservations", target.base).parse()?,
        tickets: format!("{}/v1/tickets", target.base).parse()?,
        showtimes: target.showtimes.clone().into(),
        picker: Arc::new(Picker::new(choice)),
        reported: Arc::default(),
    })
}

/// Each baseline's successful holds/s against the engine run paired with it.
fn print_ratios(outcomes: &[Outcome]) {
    println!("\n## Engine ÷ baseline, successful holds/s, pair by pair\n");
    // Attempts/s beside holds/s: how many holds can succeed is also a matter of free seats
    // (paid seats stay sold, walked-away holds keep theirs until they expire), so a design
    // answering more attempts wins fewer holds than in proportion.
    println!("| showtimes | clients | seats | pair | E holds/s | baseline holds/s | ratio | attempts/s ratio | E p99 ms | baseline p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |e: f64, b: f64| e / b.max(f64::MIN_POSITIVE);
    for w in outcomes.windows(2) {
        let (e, b) = (&w[0], &w[1]);
        if e.design != Design::E || b.design == Design::E {
            continue;
        }
        println!(
            "| {} | {} | {:?} | E/{:?} | {:.0} | {:.0} | {:.1}x | {:.1}x | {:.1} | {:.1} |",
            e.showtimes,
            e.clients,
            e.choice,
            b.design,
            e.holds_per_second(),
            b.holds_per_second(),
            ratio(e.holds_per_second(), b.holds_per_second()),
            ratio(e.attempts_per_second(), b.attempts_per_second()),
            e.tally.ms(0.99),
            b.tally.ms(0.99),
        );
    }
}

/// The engine at fixed arrival rates: fractions of the highest hold attempts/s it reached in
/// the closed loop on the hot showtime with the same seat choice and as many customers as the
/// open loop takes turns with (the largest client count).
///
/// Fewer closed-loop clients mean fewer connections, each busier: at 256 clients the closed
/// loop once reached 11% (uniform) and 5% (Zipf) more attempts/s than at 1,000, and 80% of
/// that rate was more than an open loop over 1,000 customers and up to
/// [`load::MAX_UNDER_WAY`] connections could sustain (it shed, and started its actions
/// 0.3 to 0.4 s late at p99). So saturation is taken at the open loop's own population.
async fn open_loop(server: &str, plan: &Plan, outcomes: &[Outcome]) -> anyhow::Result<()> {
    if plan.open_loads.is_empty() {
        return Ok(());
    }
    println!("\n## Open loop, the engine on the hot showtime\n");
    println!("| seats | load | max lag ms | saturation attempts/s | sent/s | holds/s | seat taken (409) | shed (503) | errors | p50 ms | p99 ms | p99.9 ms | admitted p99 ms | load late p99 ms | engine p99 ms | writer wait p99 ms | append p99 ms | double bookings |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let customers = plan.clients.iter().copied().max().unwrap_or(64);
    for &choice in &plan.seats {
        let saturation = plan
            .saturation
            .unwrap_or_else(|| closed_loop_saturation(outcomes, choice, customers));
        if saturation == 0.0 {
            continue;
        }
        for (&load, &lag) in plan
            .open_loads
            .iter()
            .flat_map(|load| plan.open_lags.iter().map(move |lag| (load, lag)))
        {
            let run = OpenRun {
                choice,
                customers,
                saturation,
                load,
                lag,
            };
            run.report(server, plan.seconds).await?;
        }
    }
    Ok(())
}

/// The highest hold attempts/s the engine reached in the closed loop on the hot showtime
/// with `choice` and `customers` clients; 0 if it did not run.
fn closed_loop_saturation(outcomes: &[Outcome], choice: Choice, customers: usize) -> f64 {
    outcomes
        .iter()
        .filter(|o| o.design == Design::E && o.showtimes == 1 && o.choice == choice)
        .filter(|o| o.clients == customers)
        .map(Outcome::attempts_per_second)
        .fold(0.0, f64::max)
}

/// One open-loop run: `load`% of `saturation` attempts/s over `customers` customers, with
/// the engine's `MARQUEE_MAX_LAG_MS` at `lag` (0 is off).
struct OpenRun {
    choice: Choice,
    customers: usize,
    saturation: f64,
    load: u32,
    lag: u64,
}

impl OpenRun {
    fn max_lag(&self) -> Option<Duration> {
        (self.lag > 0).then(|| Duration::from_millis(self.lag))
    }

    /// Runs for `seconds` and prints the table's row; fails on a broken booking invariant.
    async fn report(&self, server: &str, seconds: u64) -> anyhow::Result<()> {
        let (t, served, violations) = self.run(server, seconds).await?;
        let &Self {
            choice,
            saturation,
            load,
            lag,
            ..
        } = self;
        let per_second = |n: u64| n as f64 / seconds as f64;
        println!(
            "| {choice:?} | {load}% | {} | {saturation:.0} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {violations} |",
            self.max_lag().map_or("off".into(), |_| lag.to_string()),
            per_second(t.attempts),
            per_second(t.holds),
            t.taken,
            t.shed,
            t.errors,
            t.ms(0.5),
            t.ms(0.99),
            t.ms(0.999),
            t.admitted_p99_ms(),
            t.late_p99_ms(),
            served.holds.bound_ms(0.99),
            served.waits.bound_ms(0.99),
            served.appends.bound_ms(0.99),
        );
        anyhow::ensure!(violations == 0, "the engine broke the booking invariants");
        Ok(())
    }

    /// Starts the engine, loads it, audits its history and stops it: what the load saw, what
    /// the engine served, and how many booking invariants broke.
    async fn run(
        &self,
        server: &str,
        seconds: u64,
    ) -> anyhow::Result<(Tally, served::Reading, usize)> {
        let rate = self.saturation * f64::from(self.load) / 100.0;
        let max_lag = self.max_lag();
        let target = Target::start_with(server, Design::E, API_ONLY, 1, self.customers, |c| {
            c.max_lag = max_lag
        })
        .await?;
        let work = workload(&target, self.choice)?;
        let tokens = target.tokens.clone();
        let before = served::now();
        let result =
            load::apart(
                move || async move { load::open_loop(&work, &tokens, rate, seconds).await },
            )
            .await;
        let served = served::now().since(&before);
        let audit = target.audit().await;
        target.stop().await?;
        Ok((result?, served, audit?.len()))
    }
}
