//! A fresh database per test, so that tests running at once never see each other's rows.
//!
//! Databases are named `marquee_test_<random>` (`scripts/test` drops those earlier runs left)
//! and live on the server `MARQUEE_TEST_DATABASE_URL` names, by default the local one.

use marquee_event_store::db::MIGRATOR;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};

/// The server test databases are created on: `MARQUEE_TEST_DATABASE_URL`, by default the
/// local one.
pub fn server_url() -> String {
    std::env::var("MARQUEE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// The URL of a database no test has used yet, not created: for an engine under test, which
/// creates and migrates its database itself.
pub fn fresh_database_url() -> String {
    format!(
        "{}/marquee_test_{}",
        server_url(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Creates a fresh database, applies every migration, and connects to it.
///
/// Not `marquee_event_store::db::connect_and_migrate`: its pool (the engine's) hands out
/// connections without checking them first, and some tests end sessions on purpose (a
/// relay's lock holder, say); sqlx's default pool replaces such a connection instead of
/// failing the test's next statement on it.
pub async fn fresh_database() -> PgPool {
    let url = fresh_database_url();
    Postgres::create_database(&url)
        .await
        .expect("the test Postgres server is reachable");
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    MIGRATOR.run(&pool).await.expect("migrations apply");
    pool
}
