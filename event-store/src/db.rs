//! Connecting to Postgres: create the database when it is missing, then apply migrations.

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The settings of the engine's pools, with at most `max_connections` connections.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // Waiting long for a connection only turns an outage into hung requests; fail fast
        // and let the client retry.
        .acquire_timeout(Duration::from_secs(5))
        // No ping before every acquire: it doubled the round trips of short queries. A
        // connection that died meanwhile fails its first statement instead, which is answered
        // 503 (see `event_store::database_unavailable`) and leaves the pool.
        .test_before_acquire(false)
}

/// Creates the database if needed, connects, and applies pending migrations.
pub async fn connect_and_migrate(url: &str) -> anyhow::Result<PgPool> {
    // Validate the URL first so a typo is reported as such, not as a connection failure.
    PgConnectOptions::from_str(url).with_context(|| "DATABASE_URL is not a Postgres URL")?;
    if !Postgres::database_exists(url)
        .await
        .context("cannot reach Postgres at DATABASE_URL")?
    {
        tracing::info!("database does not exist yet; creating it");
        if let Err(e) = Postgres::create_database(url).await {
            // Two processes starting at once both try; the loser finds it there.
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(e).context("cannot create the database");
            }
        }
    }
    let pool = pool_options(16)
        .connect(url)
        .await
        .context("cannot connect to the database")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply database migrations")?;
    Ok(pool)
}

/// A statement with its parameters bound so far.
pub type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
