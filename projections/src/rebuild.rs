//! Building a projection from the whole events table, and swapping a rebuilt projection in.
//!
//! Projections name their tables without a schema, so a rebuild can run inside any schema
//! that has the same tables: [`prepare`] creates a fresh schema with empty copies of the
//! projection's tables (same columns, constraints and index names) and of the bookkeeping
//! tables, and points unqualified names at it. [`rebuild_into`] applies every event there.
//! [`replay`] then swaps the rebuilt tables in for the live ones in one transaction, so
//! readers see the old model until the new one is complete, never a half-built one.

use crate::bulk;
use crate::projection::{Projection, ProjectionError};
use crate::tracking::{apply_batch, apply_tracked, swap_lock_key};
use futures::TryStreamExt;
use marquee_domain::movie::Movie;
use marquee_domain::showtime::Showtime;
use marquee_domain::theater::Theater;
use marquee_event_store::envelope::Envelope;
use marquee_event_store::envelope::COLUMNS;
use sqlx::{PgConnection, PgPool};
use std::time::Instant;

/// Events read per page while rebuilding.
const PAGE: i64 = 10_000;

/// Builds the projection in `schema` (dropping an old one) from every stored event; returns
/// the number of events applied. One transaction: a failed rebuild leaves nothing behind.
pub async fn rebuild_into(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
) -> Result<u64, ProjectionError> {
    let mut tx = pool.begin().await?;
    prepare(&mut tx, projection, schema).await?;
    let applied = apply_all(&mut tx, projection, &|_| {}).await?;
    tx.commit().await?;
    Ok(applied)
}

fn bookkept(projection: &dyn Projection) -> Vec<&'static str> {
    let mut tables = projection.tables().to_vec();
    tables.extend(["projection_progress", "parked_events"]);
    tables
}

/// Inside the caller's transaction: (re)creates `schema` with empty copies of the
/// projection's tables and of the bookkeeping tables, with the live tables' index and
/// constraint names, and points unqualified table names at it for the rest of the
/// transaction.
pub async fn prepare(
    db: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<(), sqlx::Error> {
    create_copies(db, projection, schema).await?;
    // Unqualified names now resolve to the fresh tables first; the events table (and the
    // extensions' functions) are still found in public.
    sqlx::query(&format!("set local search_path to {schema}, public"))
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// (Re)creates `schema` with empty copies of the projection's tables and of the bookkeeping
/// tables, with the live tables' index and constraint names.
async fn create_copies(
    db: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<(), sqlx::Error> {
    create_schema(db, projection, schema).await?;
    for table in bookkept(projection) {
        add_indexes(db, table, schema).await?;
    }
    Ok(())
}

/// (Re)creates `schema` with bare copies (no indexes yet) of the projection's tables and of
/// the bookkeeping tables.
async fn create_schema(
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
    for table in bookkept(projection) {
        create_bare(db, table, schema).await?;
    }
    Ok(())
}

/// `schema.table` with the columns of `public.table`, without indexes.
async fn create_bare(db: &mut PgConnection, table: &str, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "create table {schema}.{table} (like public.{table}
             including defaults including constraints including identity including generated)"
    ))
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Gives `schema.table` the indexes and primary key of `public.table`, under the same names.
/// Building indexes once over loaded rows is much faster than maintaining them row by row.
async fn add_indexes(db: &mut PgConnection, table: &str, schema: &str) -> Result<(), sqlx::Error> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "select indexname::text, indexdef from pg_indexes where schemaname = 'public' and tablename = $1",
    )
    .bind(table)
    .fetch_all(&mut *db)
    .await?;
    for (_, def) in &indexes {
        let def = def.replace(
            &format!(" ON public.{table} "),
            &format!(" ON {schema}.{table} "),
        );
        sqlx::query(&def).execute(&mut *db).await?;
    }
    let primary: Option<String> = sqlx::query_scalar(
        "select conname::text from pg_constraint
         where conrelid = ('public.' || $1)::regclass and contype = 'p'",
    )
    .bind(table)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(name) = primary {
        sqlx::query(&format!(
            "alter table {schema}.{table} add constraint {name} primary key using index {name}"
        ))
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Applies every stored event of the projection's aggregate type, in log order, a page at a
/// time so memory stays flat however long the history. (Within one aggregate, position order
/// is sequence order: sequence n+1 can only be inserted once n is.) Calls `progress` with
/// the number of events read so far after each page.
async fn apply_all(
    db: &mut PgConnection,
    projection: &dyn Projection,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProjectionError> {
    let sql = format!(
        "select {COLUMNS} from public.events where aggregate_type = $1 and position > $2
         order by position limit $3"
    );
    let mut applied = 0;
    let mut read = 0;
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
        applied += apply_batch(projection, &events, db).await?;
        read += events.len() as u64;
        progress(read);
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

/// What a replay did.
#[derive(Clone, Debug)]
pub struct Report {
    pub projections: Vec<&'static str>,
    /// Events read and folded (once per aggregate type, however many projections use them),
    /// plus those caught up at the switch.
    pub events: u64,
    pub seconds: f64,
}

/// The number of events a replay of `projections` will read.
pub async fn events_to_replay(
    pool: &PgPool,
    projections: &[&dyn Projection],
) -> Result<i64, sqlx::Error> {
    let types: Vec<&str> = projections.iter().map(|p| p.aggregate_type()).collect();
    sqlx::query_scalar("select count(*) from events where aggregate_type = any($1)")
        .bind(&types)
        .fetch_one(pool)
        .await
}

/// Builds `projections` with the bulk path ([`crate::bulk`]) into schemas named by
/// `schema_of`, without switching anything: bare tables first, the rows, then the indexes.
/// Events of each aggregate type are read and folded once for all projections of that type.
/// Returns the events read. A failed build leaves its schemas behind; the next one drops
/// them.
pub async fn bulk_rebuild_into(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema_of: &(dyn Fn(&str) -> String + Sync),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProjectionError> {
    let mut types: Vec<&str> = projections.iter().map(|p| p.aggregate_type()).collect();
    types.sort();
    types.dedup();
    let mut read = 0;
    for aggregate_type in types {
        let targets: Vec<(&dyn Projection, String)> = projections
            .iter()
            .filter(|p| p.aggregate_type() == aggregate_type)
            .map(|p| (*p, schema_of(p.name())))
            .collect();
        let mut db = pool.acquire().await?;
        for (projection, schema) in &targets {
            create_schema(&mut db, *projection, schema).await?;
        }
        drop(db);
        let before = read;
        let progress = |n| progress(before + n);
        let started = Instant::now();
        let events = match aggregate_type {
            "Theater" => bulk::rebuild_type::<Theater>(pool, &targets, &progress).await?,
            "Movie" => bulk::rebuild_type::<Movie>(pool, &targets, &progress).await?,
            _ => bulk::rebuild_type::<Showtime>(pool, &targets, &progress).await?,
        };
        read += events;
        let written = started.elapsed();
        // One connection per table: the large indexes build side by side.
        let indexing = targets.iter().flat_map(|(projection, schema)| {
            bookkept(*projection)
                .into_iter()
                .map(move |table| async move {
                    let mut db = pool.acquire().await?;
                    add_indexes(&mut db, table, schema).await
                })
        });
        futures::future::try_join_all(indexing).await?;
        tracing::info!(
            aggregate_type,
            events,
            written_seconds = written.as_secs_f64(),
            indexed_seconds = (started.elapsed() - written).as_secs_f64(),
            "rebuilt the read models of one aggregate type"
        );
    }
    Ok(read)
}

/// Rebuilds projections from the log into fresh tables while the live ones keep serving,
/// then switches each over in one transaction: readers see the old model until the new one
/// is complete. Projectors may keep running: a switch waits for their current batch, holds
/// their next one until it commits, and applies whatever committed during the build.
pub async fn replay(
    pool: &PgPool,
    projections: &[&dyn Projection],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, ProjectionError> {
    let started = Instant::now();
    // Every transaction still running now might commit events the build does not see; they
    // all have ids at or above this horizon, and the switch applies their events.
    let horizon: String =
        sqlx::query_scalar("select pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(pool)
            .await?;
    let schema_of = |name: &str| format!("replay_{name}");
    let mut events = bulk_rebuild_into(pool, projections, &schema_of, progress).await?;
    for p in projections {
        let started = Instant::now();
        events += switch(pool, *p, &schema_of(p.name()), &horizon).await?;
        tracing::info!(
            projection = p.name(),
            seconds = started.elapsed().as_secs_f64(),
            "switched to the rebuilt read model"
        );
    }
    Ok(Report {
        projections: projections.iter().map(|p| p.name()).collect(),
        events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn switch(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    horizon: &str,
) -> Result<u64, ProjectionError> {
    let mut tx = pool.begin().await?;
    // Projector batches hold this lock shared; taking it exclusively waits for the running
    // one and keeps the next out until the switch commits. Same order for both, no deadlock.
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(swap_lock_key(projection.name()))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("set local search_path to {schema}, public"))
        .execute(&mut *tx)
        .await?;
    let late: Vec<Envelope> = sqlx::query_as(&format!(
        "select {COLUMNS} from public.events
         where aggregate_type = $1 and tx_id >= $2::text::xid8 order by position"
    ))
    .bind(projection.aggregate_type())
    .bind(horizon)
    .fetch_all(&mut *tx)
    .await?;
    let mut applied = 0;
    for e in &late {
        if apply_tracked(projection, e, &mut tx).await? {
            applied += 1;
        }
    }
    for table in projection.tables() {
        sqlx::query(&format!("drop table public.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("alter table {schema}.{table} set schema public"))
            .execute(&mut *tx)
            .await?;
    }
    for table in ["projection_progress", "parked_events"] {
        sqlx::query(&format!("delete from public.{table} where projection = $1"))
            .bind(projection.name())
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "insert into public.{table} select * from {schema}.{table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("drop schema {schema} cascade"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(applied)
}
