//! `marquee-bench`: benchmarks that compare designs side by side in one run.
//!
//! `marquee-bench replay` generates a history into a fresh database, rebuilds every read model
//! from it with the bulk path that `marquee replay` uses and with the event-by-event path the
//! live projectors use, checks that both give the same rows, and prints the times and their
//! ratio. Then it does the bulk rebuild alone on a larger history. Numbers from one run on one
//! machine compare with each other; across runs the machine's load differs.

mod hot;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand};
use marquee_projections::rebuild::{bulk_rebuild_into, differences, rebuild_into};
use marquee_projections::Projection;
use sqlx::PgPool;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about = "Marquee's benchmarks")]
struct Cli {
    /// PostgreSQL server to create the benchmark databases on.
    #[arg(
        long,
        env = "MARQUEE_BENCH_SERVER",
        default_value = "postgres://root@127.0.0.1:5432"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One hot showtime of 500 seats: designs interleaved at each client count.
    HotShowtime {
        /// Concurrent customers, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1000")]
        clients: Vec<usize>,
        /// Seat choice, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            value_enum,
            default_value = "uniform,zipf"
        )]
        seats: Vec<hot::Choice>,
        /// Designs, comma-separated, in the order they alternate.
        #[arg(long, value_delimiter = ',', value_enum, default_value = "e,n1")]
        designs: Vec<hot::Design>,
        /// Seconds of load per run.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Rounds over all designs (E, N1, E, N1, ...).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HotShowtime {
            clients,
            seats,
            designs,
            seconds,
            rounds,
        } => {
            println!("{}", hot::HEADER);
            for &n in &clients {
                for &choice in &seats {
                    for _ in 0..rounds {
                        for &design in &designs {
                            let outcome = hot::run(&cli.server, design, n, choice, seconds).await?;
                            println!("{}", outcome.row());
                            anyhow::ensure!(
                                outcome.violations == 0,
                                "double booking in {design:?}"
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Replay {
            compare_events,
            events,
        } => replay(&cli.server, compare_events, events).await,
    }
}

/// A fresh database (dropped first if a previous run left it) with a generated history.
async fn database(server: &str, name: &str, events: u64) -> anyhow::Result<(PgPool, u64)> {
    let admin = PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&admin)
        .await?;
    let pool = marquee_api::db::connect_and_migrate(&format!("{server}/{name}")).await?;
    let started = Instant::now();
    let written =
        marquee_api::generate::generate(&pool, events, 1, &indicatif::ProgressBar::hidden())
            .await?;
    sqlx::query("analyze events").execute(&pool).await?;
    eprintln!(
        "generated {written} events into {name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((pool, written))
}

async fn replay(server: &str, compare_events: u64, events: u64) -> anyhow::Result<()> {
    let projections = marquee_projections::all();
    let all: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();

    println!("## Rebuilding every read model: bulk vs event by event\n");
    let (pool, written) = database(server, "marquee_bench_replay_small", compare_events).await?;
    let started = Instant::now();
    bulk_rebuild_into(&pool, &all, &|name| format!("bulk_{name}"), &|_| {}).await?;
    let bulk = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for p in &all {
        rebuild_into(&pool, *p, &format!("incremental_{}", p.name()))
            .await
            .with_context(|| format!("rebuilding {} event by event", p.name()))?;
    }
    let incremental = started.elapsed().as_secs_f64();
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
