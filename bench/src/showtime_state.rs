//! One popular showtime with a long history: how long its writer takes to start and how much
//! memory the folded state holds.
//!
//! Two ways to start are timed side by side, in turns, on the same history: folding every
//! event from the first as the rows arrive (what a writer does when its showtime has no
//! snapshot), and starting from a snapshot with the events after it (what a writer does by
//! default, its snapshot at most `MARQUEE_SNAPSHOT_EVERY` events behind; here it is put that
//! far behind, the worst case). What the state holds is given as counts and as the size of
//! the state written out as JSON (a proxy for its heap, comparable between versions). The
//! process's resident size after each load is shown too, but it also holds what the allocator
//! kept from earlier work; `--start log` or `--start snapshot` loads one way only, so that a
//! process's peak memory can be measured from outside.

use anyhow::Context;
use marquee_domain::showtime::Showtime;
use marquee_domain::ShowtimeId;
use marquee_event_store::event_store::EventStore;
use marquee_event_store::writer::DEFAULT_SNAPSHOT_EVERY;
use sqlx::PgPool;
use std::time::Instant;

const DATABASE: &str = "marquee_bench_showtime_state";

/// How the showtime is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Start {
    /// Both ways, in turns.
    Both,
    /// Folding every event.
    Log,
    /// From a snapshot and the events after it.
    Snapshot,
}

/// Fills a fresh database with one showtime of `events` events (or, with `reuse`, takes the
/// one an earlier run left), then loads it three times each way `start` names (one way alone:
/// for the process's peak memory, measured from outside).
pub async fn run(server: &str, events: u64, reuse: bool, start: Start) -> anyhow::Result<()> {
    let (pool, showtime, written) = if reuse {
        existing(server).await?
    } else {
        let pool = crate::fresh_database(server, DATABASE).await?;
        let started = Instant::now();
        let (showtime, written) = marquee::generate::churn_showtime(&pool, events, 1).await?;
        sqlx::query("analyze events").execute(&pool).await?;
        eprintln!(
            "generated {written} events of one showtime in {:.1} s (kept in {DATABASE}: \
             --reuse loads it again)",
            started.elapsed().as_secs_f64()
        );
        (pool, showtime, written)
    };
    let store = EventStore::new(pool.clone());
    if !reuse {
        let behind = DEFAULT_SNAPSHOT_EVERY.min(written as usize - 1);
        put_snapshot(&store, showtime, written as usize - behind).await?;
    }

    println!("## One showtime's state, loaded from {written} events\n");
    println!(
        "| run | start | events folded | start s | holds | payments | tickets | \
         state as JSON MB | process resident MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in 1..=3 {
        if start != Start::Snapshot {
            let started = Instant::now();
            let loaded = store
                .fold_showtime(showtime, Showtime::default(), 0)
                .await
                .context("folding the whole log")?;
            row(run, "whole log", loaded.version, started, &loaded.showtime)?;
        }
        if start == Start::Log {
            continue;
        }
        let started = Instant::now();
        let loaded = store.load_showtime(showtime).await?;
        anyhow::ensure!(loaded.snapshot > 0, "the snapshot was not used");
        row(
            run,
            "snapshot",
            loaded.version - loaded.snapshot,
            started,
            &loaded.showtime,
        )?;
    }
    pool.close().await;
    Ok(())
}

/// The showtime an earlier run generated, and how many events it has.
async fn existing(server: &str) -> anyhow::Result<(PgPool, ShowtimeId, u64)> {
    let pool = PgPool::connect(&crate::target::database_url(server, DATABASE))
        .await
        .context("no database of an earlier run: run once without --reuse")?;
    let (id, events): (String, i64) = sqlx::query_as(
        "select aggregate_id, count(*) from events where aggregate_type = 'Showtime'
         group by aggregate_id",
    )
    .fetch_one(&pool)
    .await?;
    Ok((pool, ShowtimeId(id.parse()?), events as u64))
}

/// Stores the snapshot a writer would have taken at event `sequence`.
async fn put_snapshot(store: &EventStore, id: ShowtimeId, sequence: usize) -> anyhow::Result<()> {
    let events = store
        .events_after::<Showtime>(&id.to_string(), 0)
        .await?
        .into_iter()
        .take_while(|(s, _)| *s <= sequence);
    let mut state = Showtime::default();
    for (_, event) in events {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    store
        .save_snapshot(id, sequence, serde_json::to_value(&state)?)
        .await?;
    Ok(())
}

fn row(
    run: u32,
    how: &str,
    folded: usize,
    started: Instant,
    state: &Showtime,
) -> anyhow::Result<()> {
    let seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec(state)?.len() as f64 / (1024.0 * 1024.0);
    println!(
        "| {run} | {how} | {folded} | {seconds:.3} | {} | {} | {} | {json:.2} | {:.0} |",
        state.holds.len(),
        state.payments.len(),
        state.tickets.len(),
        resident_mb()?
    );
    Ok(())
}

/// The process's resident memory, in MiB.
fn resident_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb / 1024.0)
}
