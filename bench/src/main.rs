//! `marquee-bench`: benchmarks that compare designs side by side in one run.
//!
//! `marquee-bench hot-showtime` drives the real HTTP API with many customers grabbing seats of
//! one hot showtime (and of many showtimes, and browsing), against the engine and its
//! baselines interleaved, and audits every run's history; see [`hot`].
//!
//! `marquee-bench replay` generates a history into a fresh database, rebuilds every read model
//! from it with the bulk path that `marquee replay` uses and with the event-by-event path the
//! live projectors use, checks that both give the same rows, and prints the times and their
//! ratio. Then it does the bulk rebuild alone on a larger history. Numbers from one run on one
//! machine compare with each other; across runs the machine's load differs.
//!
//! Modules: [`hot`] (the hot-showtime plan and its tables), [`outcome`] (one run's outcome and
//! its row), [`load`] (the load generator),
//! [`target`] (starting a design for a run), [`baselines`] (N2 and R behind the same API),
//! [`fsync`] (the disk's fsync rate), [`chart`] (the SVG), [`browse`] (the read scenario),
//! [`served`] (the engine's own latency histograms), [`showtime_state`] (one showtime's state as its
//! history grows).

mod baselines;
mod browse;
mod chart;
mod fsync;
mod hot;
mod load;
mod outcome;
mod served;
mod showtime_state;
mod target;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand};
use marquee_projections::rebuild::{bulk_rebuild_into, differences, rebuild_into};
use marquee_projections::Projection;
use sqlx::PgPool;
use std::time::Instant;

/// The allocator the `marquee` binary uses, so the engine served here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Open files the benchmark asks for: the load's connections and the server's ends of them
/// are all in this one process, and an open loop past saturation holds thousands at once.
const OPEN_FILES: u64 = 1 << 20;

/// Raises this process's open files limit: to [`OPEN_FILES`] where it may (root may raise the
/// hard limit), else to the hard limit. At the shell's limit (20,000 here) an open loop at
/// 120% ran out of files, and the server's accept loop then paused for a second at a time.
fn open_files_for_both_sides() {
    use rlimit::Resource;
    if Resource::NOFILE.set(OPEN_FILES, OPEN_FILES).is_err() {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
    }
    if let Ok((soft, _)) = Resource::NOFILE.get() {
        eprintln!("open files limit: {soft}");
    }
}

#[derive(Parser)]
#[command(version, about = "Marquee's benchmarks")]
struct Cli {
    /// PostgreSQL server to create the benchmark databases on; connection options may follow
    /// a `?`. Plain TCP by default, as the Redis baseline talks to its server: TLS to a
    /// database on the same machine only adds its cost to the designs that use PostgreSQL
    /// (`?sslmode=prefer` measures with it).
    #[arg(
        long,
        env = "MARQUEE_BENCH_SERVER",
        default_value = "postgres://root@127.0.0.1:5432?sslmode=disable"
    )]
    server: String,
    /// Scheduling priority of the load generator's threads: `normal` (the server's) or
    /// `high` (the highest the process may set, so that requests leave on schedule as from
    /// customers' own machines, and the server's time lost to the load counts in its latency).
    #[arg(long, value_enum, default_value = "normal")]
    load_priority: load::Priority,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the larger variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// One hot showtime of 500 seats (and 100 showtimes, and browsing): the engine and its
    /// baselines interleaved at each setting, every run audited.
    HotShowtime {
        /// Concurrent customers on the hot showtime, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1000")]
        clients: Vec<usize>,
        /// Seat choice, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            value_enum,
            default_value = "uniform,zipf"
        )]
        seats: Vec<load::Choice>,
        /// Designs, comma-separated, in the order they alternate; a pair starts at each E.
        #[arg(
            long,
            value_delimiter = ',',
            value_enum,
            default_value = "e,n1,e,n2,e,r"
        )]
        designs: Vec<target::Design>,
        /// Seconds of load per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds over all designs at each setting.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Concurrent customers spread over 100 showtimes, comma-separated; 0 skips.
        #[arg(long, value_delimiter = ',', default_value = "256")]
        many_clients: Vec<usize>,
        /// Open-loop arrival rates for the engine, in % of its closed-loop saturation; 0 skips.
        #[arg(long, value_delimiter = ',', default_value = "50,80,100,120")]
        open_loads: Vec<u32>,
        /// `MARQUEE_MAX_LAG_MS` settings of the engine in the open loop, comma-separated; each
        /// open-loop load runs with each, side by side (0 is off, the engine's default).
        #[arg(long, value_delimiter = ',', default_value = "0,5")]
        open_lags: Vec<u64>,
        /// Hold attempts/s the open loop takes as the engine's saturation, instead of the
        /// closed loop's at the largest client count: to compare settings at the same arrival
        /// rates (a setting that sheds also lowers the closed loop's own rate).
        #[arg(long)]
        saturation: Option<f64>,
        /// Concurrent readers of the browse scenario, comma-separated; 0 skips.
        #[arg(long, value_delimiter = ',', default_value = "64,256")]
        browse_clients: Vec<usize>,
        /// Seconds per pg_test_fsync reading around each pair; 0 skips the readings.
        #[arg(long, default_value_t = 1)]
        fsync_seconds: u32,
        /// Where to write the SVG chart of holds/s and p99 against clients.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
    },
    /// Rebuilding read models: bulk against event by event, then bulk on a large history.
    Replay {
        /// Events in the history both paths rebuild (the event-by-event path is slow).
        #[arg(long, default_value_t = 100_000)]
        compare_events: u64,
        /// Events in the large history rebuilt with the bulk path only.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// One showtime under churn: its writer's start time and its state's memory.
    ShowtimeState {
        /// Events in the showtime's history.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Load the showtime an earlier run left in its database instead of generating one.
        #[arg(long)]
        reuse: bool,
        /// How to load it: both ways in turns, or one alone (for its peak memory).
        #[arg(long, value_enum, default_value_t = showtime_state::Start::Both)]
        start: showtime_state::Start,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    load::set_priority(cli.load_priority);
    open_files_for_both_sides();
    match cli.command {
        Command::HotShowtime {
            clients,
            seats,
            designs,
            seconds,
            rounds,
            many_clients,
            open_loads,
            open_lags,
            saturation,
            browse_clients,
            fsync_seconds,
            chart,
        } => {
            let nonzero = |v: Vec<usize>| v.into_iter().filter(|&n| n > 0).collect();
            let plan = hot::Plan {
                clients,
                seats,
                designs,
                seconds,
                rounds,
                many_clients: nonzero(many_clients),
                open_loads: open_loads.into_iter().filter(|&p| p > 0).collect(),
                open_lags,
                saturation,
                browse_clients: nonzero(browse_clients),
                fsync_seconds,
                chart,
            };
            hot::run(&cli.server, &plan).await
        }
        Command::Replay {
            compare_events,
            events,
        } => replay(&cli.server, compare_events, events).await,
        Command::ShowtimeState {
            events,
            reuse,
            start,
        } => showtime_state::run(&cli.server, events, reuse, start).await,
    }
}

/// An empty, migrated database, dropped first if a previous run left it.
async fn fresh_database(server: &str, name: &str) -> anyhow::Result<PgPool> {
    let admin = PgPool::connect(&target::database_url(server, "postgres")).await?;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&admin)
        .await?;
    marquee_event_store::db::connect_and_migrate(&target::database_url(server, name)).await
}

/// A fresh database with a generated history.
async fn database(server: &str, name: &str, events: u64) -> anyhow::Result<(PgPool, u64)> {
    let pool = fresh_database(server, name).await?;
    let started = Instant::now();
    let written =
        marquee::generate::generate(&pool, events, 1, &indicatif::ProgressBar::hidden()).await?;
    sqlx::query("analyze events").execute(&pool).await?;
    eprintln!(
        "generated {written} events into {name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((pool, written))
}

/// Rebuilds each read model event by event (the live projectors' path) into schemas of its
/// own; returns how long each took.
async fn incremental_rebuilds(
    pool: &PgPool,
    all: &[&dyn Projection],
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut each = Vec::new();
    for p in all {
        let started = Instant::now();
        rebuild_into(pool, *p, &format!("incremental_{}", p.name()))
            .await
            .with_context(|| format!("rebuilding {} event by event", p.name()))?;
        each.push((p.name(), started.elapsed().as_secs_f64()));
    }
    Ok(each)
}

async fn replay(server: &str, compare_events: u64, events: u64) -> anyhow::Result<()> {
    let projections = marquee_projections::all();
    let all: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();

    println!("## Rebuilding every read model: bulk vs event by event\n");
    let (pool, written) = database(server, "marquee_bench_replay_small", compare_events).await?;
    let started = Instant::now();
    bulk_rebuild_into(&pool, &all, &|name| format!("bulk_{name}"), &|_| {}).await?;
    let bulk = started.elapsed().as_secs_f64();
    let each = incremental_rebuilds(&pool, &all).await?;
    let incremental: f64 = each.iter().map(|(_, seconds)| seconds).sum();
    for p in &all {
        for table in p.tables().iter().chain(&["projection_progress"]) {
            let diff = differences(
                &pool,
                table,
                &format!("bulk_{}", p.name()),
                &format!("incremental_{}", p.name()),
            )
            .await?;
            ensure!(diff == 0, "{table}: the two rebuilds differ in {diff} rows");
        }
    }
    println!("| path | events | seconds | events/s |");
    println!("|---|---|---|---|");
    println!(
        "| bulk (`marquee replay`) | {written} | {bulk:.2} | {:.0} |",
        written as f64 / bulk
    );
    println!(
        "| event by event (live projector path) | {written} | {incremental:.2} | {:.0} |",
        written as f64 / incremental
    );
    println!(
        "\nbulk is {:.1}x faster; both rebuilds are equal row for row.\n",
        incremental / bulk
    );
    println!("| read model, event by event | seconds |\n|---|---|");
    for (name, seconds) in each {
        println!("| {name} | {seconds:.2} |");
    }
    println!();
    pool.close().await;

    println!("## Bulk rebuild of a large history\n");
    let (pool, written) = database(server, "marquee_bench_replay_large", events).await?;
    println!("| run | events | seconds | events/s |");
    println!("|---|---|---|---|");
    for run in 1..=3 {
        let started = Instant::now();
        bulk_rebuild_into(&pool, &all, &|name| format!("bulk_{name}"), &|_| {}).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {run} | {written} | {seconds:.2} | {:.0} |",
            written as f64 / seconds
        );
    }
    pool.close().await;
    Ok(())
}
