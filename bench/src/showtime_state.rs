//! One popular showtime with a long history: how long its writer takes to start (load and
//! fold every event) and how much memory the folded state holds, as the history grows.
//!
//! A writer keeps its showtime's whole state in memory and rebuilds it from the log when it
//! starts; these figures are what a showtime under churn costs. What the state holds is
//! given as counts and as the size of the state written out as JSON (a proxy for its heap,
//! comparable between versions); the process's resident size after each load is shown too,
//! but it also holds what the allocator kept of the events read for the load.

use anyhow::Context;
use marquee_api::event_store::EventStore;
use marquee_domain::showtime::Showtime;
use std::time::Instant;

/// Fills a fresh database with one showtime of `events` events, then loads it three times.
pub async fn run(server: &str, events: u64) -> anyhow::Result<()> {
    let name = "marquee_bench_showtime_state";
    let pool = crate::fresh_database(server, name).await?;
    let started = Instant::now();
    let (showtime, written) = marquee_api::generate::churn_showtime(&pool, events, 1).await?;
    eprintln!(
        "generated {written} events of one showtime in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let store = EventStore::new(pool.clone());
    println!("## One showtime's state, loaded from {written} events\n");
    println!("| run | events | start s | holds | payments | tickets | state as JSON MB | process resident MB |");
    println!("|---|---|---|---|---|---|---|---|");
    for run in 1..=3 {
        let started = Instant::now();
        let (state, _) = store
            .load::<Showtime>(&showtime.to_string())
            .await
            .context("loading the showtime")?;
        let seconds = started.elapsed().as_secs_f64();
        let json = serde_json::to_vec(&state)?.len() as f64 / (1024.0 * 1024.0);
        println!(
            "| {run} | {written} | {seconds:.2} | {} | {} | {} | {json:.0} | {:.0} |",
            state.holds.len(),
            state.payments.len(),
            state.tickets.len(),
            resident_mb()?
        );
        drop(state);
    }
    pool.close().await;
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
