//! `marquee`: the booking engine. With no arguments it runs everything in one process.

use anyhow::Context;
use clap::{Parser, Subcommand};
use marquee_api::config::Config;
use marquee_api::startup::{self, Roles};
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
        Command::Migrate => {
            marquee_api::db::connect_and_migrate(&config.database_url).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
    }
}

async fn run(config: Config, roles: Roles) -> anyhow::Result<()> {
    let addr = config.http_addr;
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
