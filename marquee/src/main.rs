//! `marquee`: the booking engine. With no arguments it runs everything in one process.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use marquee::operator::Format;
use marquee::startup::{self, Roles};
use marquee_api::config::Config;
use marquee_event_store::history::Filter;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc rather than glibc's malloc: the engine allocates many small, short-lived values
/// (decoded events, rows, JSON), and glibc's allocator took about a fifth of a replay's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Marquee, the booking engine for cinemas. Configuration comes from environment variables
/// (DATABASE_URL, NATS_URL, MARQUEE_HTTP_ADDR, ...; see the README).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole engine in one process: API, expiry timer, relay and projectors (the
    /// default).
    Serve,
    /// Run only the HTTP API and the hold-expiry timer (scale out behind a load balancer).
    Api,
    /// Run only the relay that publishes the event log to NATS JetStream. Several may run;
    /// one is active at a time, the others stand by.
    Relay,
    /// Run only the projectors that build the read models from JetStream.
    Projector,
    /// Create the database if needed and apply migrations, then exit.
    Migrate,
    /// Export the event history as NDJSON or CSV, in commit order, streaming.
    Events(EventsArgs),
    /// Fill an empty database with a realistic generated history (for analysis and
    /// benchmarks, not for booking).
    GenerateHistory {
        /// About how many events to write.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Seed of the random choices: the same seed gives the same story.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Rebuild read models from the event log into fresh tables, then switch over atomically
    /// while the engine keeps serving.
    Replay {
        /// Projections to rebuild: theaters, movies, showtimes, seat_maps, tickets (default:
        /// all).
        projections: Vec<String>,
    },
    /// Replay the whole event log and check Marquee's promises: no seat in two live holds or
    /// sold twice, every ticket paid once, every charge ticketed or refunded, every refund
    /// matching a payment, read models equal to a rebuild. Exits with status 1 on any
    /// violation. Run it while no one books, or read-model differences may be events in
    /// transit.
    Check {
        /// Seconds to wait for the projectors to catch up before comparing the read models
        /// with a rebuild.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Do not compare the read models (e.g. no projector runs on this database).
        #[arg(long)]
        skip_read_models: bool,
    },
}

#[derive(clap::Args)]
struct EventsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "ndjson")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Only events after this position.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// Only events of this aggregate type (Theater, Movie, Showtime).
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Only events of this aggregate.
    #[arg(long)]
    aggregate_id: Option<String>,
    /// Only events of this type (e.g. SeatsHeld).
    #[arg(long)]
    event_type: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let config = Config::from_env()?;
    let only = |api, relay, projector| Roles {
        api,
        relay,
        projector,
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run(config, Roles::ALL).await,
        Command::Api => run(config, only(true, false, false)).await,
        Command::Relay => run(config, only(false, true, false)).await,
        Command::Projector => run(config, only(false, false, true)).await,
        Command::Events(args) => export(config, args).await,
        Command::GenerateHistory { events, seed } => generate_history(config, events, seed).await,
        Command::Replay { projections } => replay(config, &projections).await,
        Command::Check {
            wait,
            skip_read_models,
        } => {
            check(
                config,
                (!skip_read_models).then(|| Duration::from_secs(wait)),
            )
            .await
        }
        Command::Migrate => migrate(config).await,
    }
}

/// `marquee generate-history`: writes a generated history, with progress on a terminal.
async fn generate_history(config: Config, events: u64, seed: u64) -> anyhow::Result<()> {
    let pool = marquee_event_store::db::connect_and_migrate(&config.database_url).await?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(events)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let written = marquee::generate::generate(&pool, events, seed, &progress).await?;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {written} events in {seconds:.1} s ({:.0} events/s)",
        written as f64 / seconds
    );
    Ok(())
}

/// `marquee replay`: rebuilds read models and switches over to them.
async fn replay(config: Config, projections: &[String]) -> anyhow::Result<()> {
    let pool = marquee_event_store::db::connect_and_migrate(&config.database_url).await?;
    let report =
        marquee::operator::replay(&pool, projections, std::io::stderr().is_terminal()).await?;
    eprintln!(
        "replayed {}: {} events in {:.2} s ({:.0} events/s), switched over",
        report.projections.join(", "),
        report.events,
        report.seconds,
        report.events as f64 / report.seconds.max(1e-9)
    );
    Ok(())
}

/// `marquee check`: every broken promise as a `VIOLATION` line; exit status 1 if any.
async fn check(config: Config, wait: Option<Duration>) -> anyhow::Result<()> {
    let pool = marquee_event_store::db::connect_and_migrate(&config.database_url).await?;
    let findings = marquee::operator::check(&pool, wait, std::io::stderr().is_terminal()).await?;
    for v in &findings.violations {
        println!("VIOLATION {v}");
    }
    eprintln!(
        "checked {} events of {} showtimes in {:.1} s: {} payments, {} tickets, {} \
         payments being reconciled, {} refunds due, {} payments the processor has no \
         record of, read models {}; {} violations",
        findings.events,
        findings.showtimes,
        findings.seconds,
        findings.payments,
        findings.tickets,
        findings.payments_in_flight,
        findings.refunds_due,
        findings.unknown_to_processor,
        if findings.read_models_checked {
            "equal to a rebuild"
        } else {
            "not compared"
        },
        findings.violations.len()
    );
    if !findings.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `marquee migrate`: creates the database if needed and applies pending migrations.
async fn migrate(config: Config) -> anyhow::Result<()> {
    marquee_event_store::db::connect_and_migrate(&config.database_url).await?;
    tracing::info!("database is up to date");
    Ok(())
}

async fn run(config: Config, roles: Roles) -> anyhow::Result<()> {
    let addr = config.http_addr;
    raise_open_files_limit();
    let state = startup::build_state(config).await?;
    let listener = if roles.api {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        Some(listener)
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    startup::run(listener, state, roles, shutdown).await
}

/// Lets the process open as many files as the system allows it. Every connection is a file,
/// and a spike brings thousands: at the usual default soft limit (1,024) the listener would
/// fail to accept and pause, which turns a spike into an outage.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

async fn export(config: Config, args: EventsArgs) -> anyhow::Result<()> {
    let pool = marquee_event_store::db::connect_and_migrate(&config.database_url).await?;
    let filter = Filter {
        aggregate_type: args.aggregate_type,
        aggregate_id: args.aggregate_id,
        event_type: args.event_type,
        from: args.from,
        to: args.to,
    };
    let started = std::time::Instant::now();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let progress = std::io::stderr().is_terminal();
    let summary =
        marquee::operator::export(&pool, &filter, args.after, args.format, &mut out, progress)
            .await?;
    let seconds = started.elapsed().as_secs_f64();
    match (summary.first, summary.last) {
        (Some(first), Some(last)) => eprintln!(
            "exported {} events (positions {first} to {last}) in {seconds:.2} s; \
             continue later with --after {last}",
            summary.events
        ),
        _ => eprintln!("no events matched"),
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Logs go to stderr; `MARQUEE_LOG_FORMAT=json` makes them one JSON object per line.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("MARQUEE_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
