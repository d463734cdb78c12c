//! Building a projection from the whole events table.
//!
//! Projections name their tables without a schema, so a rebuild can run inside any schema
//! that has the same tables: `rebuild_into` creates a fresh schema with empty copies of the
//! projection's tables (and its own progress table) and applies every event there, in one
//! transaction. Comparing it with the live tables proves the live read model equals a
//! rebuild; swapping it in replaces the live one.

use crate::projection::{Projection, ProjectionError};
use crate::tracking::apply_tracked;
use futures::TryStreamExt;
use marquee_nats::envelope::COLUMNS;
use marquee_nats::Envelope;
use sqlx::{PgConnection, PgPool};

/// Creates `schema` (dropping an old one) with empty copies of the projection's tables and of
/// the bookkeeping tables, and applies every event of the projection's aggregate type there.
/// Returns the number of events applied.
pub async fn rebuild_into(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
) -> Result<u64, ProjectionError> {
    let mut tx = pool.begin().await?;
    prepare(&mut tx, projection, schema).await?;
    let applied = apply_all(&mut tx, projection).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Inside the caller's transaction: (re)creates `schema` with empty copies of the
/// projection's tables and of the bookkeeping tables, and points unqualified table names at
/// it for the rest of the transaction.
pub async fn prepare(
    db: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("drop schema if exists {schema} cascade"))
        .execute(&mut *db)
        .await?;
    sqlx::query(&format!("create schema {schema}"))
        .execute(&mut *db)
        .await?;
    for table in projection
        .tables()
        .iter()
        .chain(&["projection_progress", "parked_events"])
    {
        sqlx::query(&format!(
            "create table {schema}.{table} (like public.{table} including all)"
        ))
        .execute(&mut *db)
        .await?;
    }
    // Unqualified names now resolve to the fresh tables first; the events table (and the
    // extensions' functions) are still found in public.
    sqlx::query(&format!("set local search_path to {schema}, public"))
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Events read per page while rebuilding.
const PAGE: i64 = 10_000;

/// Applies every stored event of the projection's aggregate type, in log order, a page at a
/// time so memory stays flat however long the history. (Within one aggregate, position order
/// is sequence order: sequence n+1 can only be inserted once n is.)
async fn apply_all(
    db: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<u64, ProjectionError> {
    let sql = format!(
        "select {COLUMNS} from public.events where aggregate_type = $1 and position > $2
         order by position limit $3"
    );
    let mut applied = 0;
    let mut after = 0i64;
    loop {
        let events: Vec<Envelope> = sqlx::query_as::<_, Envelope>(&sql)
            .bind(projection.aggregate_type())
            .bind(after)
            .bind(PAGE)
            .fetch(&mut *db)
            .try_collect()
            .await?;
        let Some(last) = events.last() else {
            return Ok(applied);
        };
        after = last.position;
        for e in &events {
            if apply_tracked(projection, e, db).await? {
                applied += 1;
            }
        }
    }
}

/// Rows of `table` in `schema_a` and not in `schema_b`, or the other way round.
pub async fn differences(
    pool: &PgPool,
    table: &str,
    schema_a: &str,
    schema_b: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select count(*) from (
            (select * from {schema_a}.{table} except all select * from {schema_b}.{table})
            union all
            (select * from {schema_b}.{table} except all select * from {schema_a}.{table})
         ) d"
    ))
    .fetch_one(pool)
    .await
}
