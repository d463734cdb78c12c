//! Rebuilding read models fast: one pass over the log per aggregate type, folding each
//! aggregate in memory with the domain's own `apply`, then writing every read model of that
//! type from the folded states in large multi-row inserts.
//!
//! The incremental path ([`crate::tracking`]) applies events one at a time with a few
//! statements each: right for a live stream, far too slow for a million events. Here the
//! database does one streaming read and a few thousand inserts instead. Both paths must give
//! the same rows; the tests compare them.

use crate::projection::{Projection, ProjectionError};
use crate::{movies, seat_maps, showtimes, theaters, tickets};
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use marquee_domain::movie::Movie;
use marquee_domain::showtime::Showtime;
use marquee_domain::theater::Theater;
use marquee_domain::upcast::{current_version, upcast};
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// Folded aggregates of one type by id, with the last sequence applied to each.
pub type Folded<A> = HashMap<String, (A, i64)>;

#[derive(sqlx::FromRow)]
struct Row {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
}

/// Streams every event of `A`'s type in log order and folds each aggregate. Calls `progress`
/// with the number of events read every 10,000 events.
pub async fn fold<A: Aggregate>(
    pool: &PgPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Folded<A>, u64), ProjectionError> {
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query_as::<_, Row>(
        "select aggregate_id, sequence, event_type, event_version, payload::text as payload
         from events where aggregate_type = $1 order by aggregate_id, sequence",
    )
    .bind(A::TYPE)
    .fetch(&mut *conn);
    let mut folded: Folded<A> = HashMap::new();
    let mut read = 0u64;
    while let Some(row) = rows.try_next().await? {
        let event: A::Event = decode(&row)?;
        let entry = folded
            .entry(row.aggregate_id)
            .or_insert_with(|| (A::default(), 0));
        entry.0.apply(event);
        entry.1 = row.sequence;
        read += 1;
        if read.is_multiple_of(10_000) {
            progress(read);
        }
    }
    progress(read);
    Ok((folded, read))
}

/// Decodes straight from the stored text when the event is in its current shape (the common
/// case), through the upcasters otherwise.
fn decode<E: DeserializeOwned>(row: &Row) -> Result<E, ProjectionError> {
    let error = |message: String| ProjectionError::Decode {
        event_type: row.event_type.clone(),
        version: row.event_version.clone(),
        message,
    };
    if row.event_version == current_version(&row.event_type) {
        return serde_json::from_str(&row.payload).map_err(|e| error(e.to_string()));
    }
    let mut value: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(|e| error(e.to_string()))?;
    upcast(&row.event_type, &row.event_version, &mut value).map_err(|e| error(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| error(e.to_string()))
}

/// Writes `projection`'s progress rows: every folded aggregate at its last sequence.
pub async fn write_progress<A>(
    db: &mut PgConnection,
    schema: &str,
    projection: &dyn Projection,
    folded: &Folded<A>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = folded.keys().map(String::as_str).collect();
    let sequences: Vec<i64> = folded.values().map(|(_, s)| *s).collect();
    for (ids, sequences) in ids.chunks(10_000).zip(sequences.chunks(10_000)) {
        sqlx::query(&format!(
            "insert into {schema}.projection_progress (projection, aggregate_type, aggregate_id, last_sequence)
             select $1, $2, * from unnest($3::text[], $4::bigint[])"
        ))
        .bind(projection.name())
        .bind(projection.aggregate_type())
        .bind(ids)
        .bind(sequences)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// The states folded for one aggregate type.
pub enum States {
    Theaters(Folded<Theater>),
    Movies(Folded<Movie>),
    Showtimes(Folded<Showtime>),
}

/// Folded states and the number of events they were folded from.
pub struct FoldedType {
    pub states: States,
    pub events: u64,
}

/// Folds every aggregate of `aggregate_type`.
pub async fn fold_type(
    pool: &PgPool,
    aggregate_type: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FoldedType, ProjectionError> {
    let (states, events) = match aggregate_type {
        "Theater" => {
            let (f, n) = fold(pool, progress).await?;
            (States::Theaters(f), n)
        }
        "Movie" => {
            let (f, n) = fold(pool, progress).await?;
            (States::Movies(f), n)
        }
        _ => {
            let (f, n) = fold(pool, progress).await?;
            (States::Showtimes(f), n)
        }
    };
    Ok(FoldedType { states, events })
}

/// Writes `projection`'s tables in `schema` (already prepared, empty) from folded states,
/// with its progress rows.
pub async fn write(
    db: &mut PgConnection,
    schema: &str,
    projection: &dyn Projection,
    states: &States,
) -> Result<(), ProjectionError> {
    match (projection.name(), states) {
        ("theaters", States::Theaters(f)) => {
            theaters::write_all(db, schema, f).await?;
            write_progress(db, schema, projection, f).await?;
        }
        ("movies", States::Movies(f)) => {
            movies::write_all(db, schema, f).await?;
            write_progress(db, schema, projection, f).await?;
        }
        ("showtimes", States::Showtimes(f)) => {
            showtimes::write_all(db, schema, f).await?;
            write_progress(db, schema, projection, f).await?;
        }
        ("seat_maps", States::Showtimes(f)) => {
            seat_maps::write_all(db, schema, f).await?;
            write_progress(db, schema, projection, f).await?;
        }
        ("tickets", States::Showtimes(f)) => {
            tickets::write_all(db, schema, f).await?;
            write_progress(db, schema, projection, f).await?;
        }
        (name, _) => unreachable!("no bulk writer for {name} from these states"),
    }
    Ok(())
}
