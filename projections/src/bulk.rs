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

/// Streams every event of `A`'s type in aggregate order and folds each aggregate. Reading
/// (one task, one connection) and decoding plus folding (this task) overlap. Calls
/// `progress` with the number of events folded so far.
pub async fn fold<A>(
    pool: &PgPool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Folded<A>, u64), ProjectionError>
where
    A: Aggregate + 'static,
{
    let (sender, mut batches) = tokio::sync::mpsc::channel::<Vec<Row>>(16);
    let pool = pool.clone();
    let reader = tokio::spawn(async move {
        let mut conn = pool.acquire().await?;
        // In aggregate order (the primary key's), so each aggregate's events arrive together
        // and in sequence.
        let mut rows = sqlx::query_as::<_, Row>(
            "select aggregate_id, sequence, event_type, event_version, payload::text as payload
             from events where aggregate_type = $1 order by aggregate_id, sequence",
        )
        .bind(A::TYPE)
        .fetch(&mut *conn);
        let mut batch = Vec::with_capacity(READ_BATCH);
        while let Some(row) = rows.try_next().await? {
            batch.push(row);
            if batch.len() == READ_BATCH && sender.send(std::mem::take(&mut batch)).await.is_err() {
                return Ok(());
            }
        }
        let _ = sender.send(batch).await;
        Ok::<(), sqlx::Error>(())
    });
    let mut folded: Folded<A> = HashMap::new();
    let mut read = 0u64;
    while let Some(batch) = batches.recv().await {
        for row in batch {
            let event: A::Event = decode(&row)?;
            let entry = folded
                .entry(row.aggregate_id)
                .or_insert_with(|| (A::default(), 0));
            entry.0.apply(event);
            entry.1 = row.sequence;
            read += 1;
        }
        progress(read);
    }
    reader
        .await
        .map_err(|e| ProjectionError::Database(sqlx::Error::Protocol(e.to_string())))??;
    Ok((folded, read))
}

/// Rows handed from the reading task to the folding one at a time.
const READ_BATCH: usize = 1024;

/// Rows in PostgreSQL's `COPY ... FROM STDIN` text format, sent in chunks as they grow.
pub struct CopyRows<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
    buf: String,
    first: bool,
}

/// Bytes collected before they are sent.
const COPY_CHUNK: usize = 1 << 20;

impl<'c> CopyRows<'c> {
    /// Starts `COPY schema.table (columns) FROM STDIN`.
    pub async fn start(
        db: &'c mut PgConnection,
        schema: &str,
        table: &str,
        columns: &str,
    ) -> Result<Self, sqlx::Error> {
        let copy = db
            .copy_in_raw(&format!("copy {schema}.{table} ({columns}) from stdin"))
            .await?;
        Ok(Self {
            copy,
            buf: String::with_capacity(COPY_CHUNK + 4096),
            first: true,
        })
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push('\t');
        }
        self.first = false;
    }

    /// A text value, escaped.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.sep();
        for c in v.chars() {
            match c {
                '\\' => self.buf.push_str("\\\\"),
                '\t' => self.buf.push_str("\\t"),
                '\n' => self.buf.push_str("\\n"),
                '\r' => self.buf.push_str("\\r"),
                c => self.buf.push(c),
            }
        }
        self
    }

    /// NULL.
    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("\\N");
        self
    }

    /// Anything whose `Display` needs no escaping (numbers, UUIDs).
    pub fn plain(&mut self, v: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        self.sep();
        write!(self.buf, "{v}").expect("writing to a String");
        self
    }

    /// An optional UUID.
    pub fn uuid(&mut self, v: Option<uuid::Uuid>) -> &mut Self {
        match v {
            Some(id) => self.plain(id),
            None => self.null(),
        }
    }

    /// A timestamp, to the microsecond and truncated, as the binary protocol stores it.
    pub fn time(&mut self, v: Option<chrono::DateTime<chrono::Utc>>) -> &mut Self {
        match v {
            Some(t) => self.plain(t.format("%Y-%m-%dT%H:%M:%S%.6f+00")),
            None => self.null(),
        }
    }

    /// A JSON value.
    pub fn json(&mut self, v: &serde_json::Value) -> &mut Self {
        self.text(&v.to_string())
    }

    /// Ends the row; sends what has gathered once it is large.
    pub async fn end_row(&mut self) -> Result<(), sqlx::Error> {
        self.buf.push('\n');
        self.first = true;
        if self.buf.len() >= COPY_CHUNK {
            self.copy.send(self.buf.as_bytes()).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends the rest and ends the copy; returns the rows copied.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        if !self.buf.is_empty() {
            self.copy.send(self.buf.as_bytes()).await?;
        }
        self.copy.finish().await
    }
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
    let mut rows = CopyRows::start(
        db,
        schema,
        "projection_progress",
        "projection, aggregate_type, aggregate_id, last_sequence",
    )
    .await?;
    for (id, (_, sequence)) in folded {
        rows.text(projection.name())
            .text(projection.aggregate_type())
            .text(id)
            .plain(sequence);
        rows.end_row().await?;
    }
    rows.finish().await?;
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
