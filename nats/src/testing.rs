//! Test helpers (feature `testing`): a fresh database with every migration applied.

use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};

/// The server test databases are created on: `MARQUEE_TEST_DATABASE_URL`, by default the
/// local one.
pub fn server_url() -> String {
    std::env::var("MARQUEE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// Creates a database named `marquee_test_<random>`, applies the migrations, and connects.
pub async fn fresh_database() -> PgPool {
    let name = format!("marquee_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", server_url());
    Postgres::create_database(&url)
        .await
        .expect("the test Postgres server is reachable");
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    sqlx::migrate!("../migrations")
        .run(&pool)
        .await
        .expect("migrations apply");
    pool
}

/// A namespace no other test shares.
pub fn fresh_namespace() -> crate::Namespace {
    let id = uuid::Uuid::new_v4().simple().to_string();
    crate::Namespace::new(&format!("mqt{}", &id[..12])).expect("valid namespace")
}
