//! Rebuilding read models fast: one pass over the log per aggregate type, in aggregate order,
//! folding each aggregate in memory with the domain's own `apply`. As soon as an aggregate's
//! last event is folded, its final state goes to every projection's [`BulkWriter`], each in
//! a task of its own streaming rows with `COPY`; the caller builds the indexes once the rows
//! are in. Reading and decoding (one task), folding (another) and writing (one task per
//! projection) overlap, and memory holds a few batches of aggregates, not the whole history.
//!
//! The incremental path ([`crate::tracking`]) applies events one at a time with a few
//! statements each: right for a live stream, far too slow for a million events. Both paths
//! must give the same rows; the tests compare them.

use crate::projection::{Projection, ProjectionError};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use marquee_domain::upcast::{current_version, upcast};
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgCopyIn, PgPoolCopyExt};
use sqlx::{PgPool, Postgres};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Writes one projection's rows from aggregates' final states, one aggregate at a time.
#[async_trait]
pub trait BulkWriter<A>: Send {
    /// Writes the rows of one aggregate, in its final state.
    async fn write(&mut self, state: &A) -> Result<(), sqlx::Error>;
    /// Writes what is left and ends the writes.
    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error>;
}

/// An aggregate type whose events read models are rebuilt from in bulk.
#[async_trait]
pub trait Bulk: Aggregate + Sync + 'static {
    /// The bulk writer of the projection named `projection` into `schema`'s empty tables.
    async fn writer(
        pool: &PgPool,
        projection: &str,
        schema: &str,
    ) -> Result<Box<dyn BulkWriter<Self>>, sqlx::Error>;
}

/// One aggregate's final state and the last sequence folded into it.
struct Final<A> {
    id: String,
    state: A,
    sequence: i64,
}

/// Final states handed to every writer at once.
type Handoff<A> = Arc<Vec<Final<A>>>;

/// The log is read in parts, side by side: complementary conditions on a hash of the
/// aggregate id, so the parts are even whatever the ids look like (time-ordered UUIDs share
/// their first characters).
const PARTS: [&str; 2] = [
    "hashtext(aggregate_id) & 1 = 0",
    "hashtext(aggregate_id) & 1 = 1",
];

/// Aggregates handed to the writers at a time.
const HANDOFF: usize = 32;
/// Events handed from the reading task to the folding one at a time.
const READ_BATCH: usize = 1024;

/// Rebuilds `targets` (projections of `A`'s events, each with the schema of its fresh, empty
/// tables) from every event of `A`'s type. Calls `progress` with the events folded so far;
/// returns their number. Indexes are the caller's to build afterwards.
pub async fn rebuild_type<A: Bulk>(
    pool: &PgPool,
    targets: &[(&dyn Projection, String)],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProjectionError> {
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for (projection, schema) in targets {
        let writer = A::writer(pool, projection.name(), schema).await?;
        let (sender, states) = mpsc::channel(4);
        senders.push(sender);
        writers.push(tokio::spawn(drain(
            writer,
            states,
            Progress {
                pool: pool.clone(),
                schema: schema.clone(),
                projection: projection.name(),
                aggregate_type: projection.aggregate_type(),
                rows: Vec::new(),
            },
        )));
    }
    // Each part of the log is read and decoded by a PostgreSQL backend and a task of its own,
    // so turning `jsonb` into text and decoding it run on every core.
    let folded_per_part: Vec<AtomicU64> = PARTS.iter().map(|_| AtomicU64::new(0)).collect();
    let folds = PARTS.iter().enumerate().map(|(i, part)| {
        let folded_per_part = &folded_per_part;
        let senders = &senders;
        async move {
            let report = |n| {
                folded_per_part[i].store(n, Ordering::Relaxed);
                progress(
                    folded_per_part
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed))
                        .sum(),
                );
            };
            fold::<A>(pool, part, senders, &report).await
        }
    });
    let folded = futures::future::try_join_all(folds)
        .await
        .map(|counts| counts.into_iter().sum());
    drop(senders);
    // A writer that failed stopped taking states, which stopped the fold: its own error is
    // the one worth reporting.
    for writer in writers {
        writer.await.map_err(task_failed)??;
    }
    folded
}

/// Feeds every final state to `writer`, then writes the progress rows.
async fn drain<A: Bulk>(
    mut writer: Box<dyn BulkWriter<A>>,
    mut states: mpsc::Receiver<Handoff<A>>,
    mut progress: Progress,
) -> Result<(), sqlx::Error> {
    while let Some(batch) = states.recv().await {
        for f in batch.iter() {
            writer.write(&f.state).await?;
            progress.rows.push((f.id.clone(), f.sequence));
        }
    }
    writer.finish().await?;
    progress.write().await
}

/// A projection's progress rows: every aggregate at its last sequence.
struct Progress {
    pool: PgPool,
    schema: String,
    projection: &'static str,
    aggregate_type: &'static str,
    rows: Vec<(String, i64)>,
}

impl Progress {
    async fn write(self) -> Result<(), sqlx::Error> {
        let mut copy = CopyRows::start(
            &self.pool,
            &self.schema,
            "projection_progress",
            "projection, aggregate_type, aggregate_id, last_sequence",
        )
        .await?;
        for (id, sequence) in &self.rows {
            copy.text(self.projection)
                .text(self.aggregate_type)
                .text(id)
                .int8(*sequence);
            copy.end_row().await?;
        }
        copy.finish().await?;
        Ok(())
    }
}

/// One decoded event of an aggregate.
struct Decoded<E> {
    aggregate_id: String,
    sequence: i64,
    event: E,
}

/// Streams every event of `A`'s type in aggregate order, decodes it (reading task) and folds
/// it (this task); hands each aggregate's final state to every writer as soon as its last
/// event is folded.
async fn fold<A: Bulk>(
    pool: &PgPool,
    part: &'static str,
    writers: &[mpsc::Sender<Handoff<A>>],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProjectionError> {
    let (sender, mut batches) = mpsc::channel::<Vec<Decoded<A::Event>>>(16);
    let reader = tokio::spawn(read::<A::Event>(pool.clone(), A::TYPE, part, sender));
    let mut current: Option<Final<A>> = None;
    let mut done = Vec::with_capacity(HANDOFF);
    let mut read = 0u64;
    while let Some(batch) = batches.recv().await {
        for e in batch {
            if current.as_ref().is_none_or(|c| c.id != e.aggregate_id) {
                done.extend(current.take());
                if done.len() >= HANDOFF {
                    hand_off(writers, std::mem::take(&mut done)).await?;
                }
                current = Some(Final {
                    id: e.aggregate_id,
                    state: A::default(),
                    sequence: 0,
                });
            }
            let aggregate = current.as_mut().expect("set above");
            aggregate.state.apply(e.event);
            aggregate.sequence = e.sequence;
            read += 1;
        }
        progress(read);
    }
    // The reader stops early only on an error: report that one.
    reader.await.map_err(task_failed)??;
    done.extend(current);
    hand_off(writers, done).await?;
    Ok(read)
}

async fn hand_off<A>(
    writers: &[mpsc::Sender<Handoff<A>>],
    states: Vec<Final<A>>,
) -> Result<(), ProjectionError> {
    let states = Arc::new(states);
    for writer in writers {
        writer
            .send(states.clone())
            .await
            .map_err(|_| task_failed("a bulk writer stopped"))?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
}

/// Reads every event of `aggregate_type` in aggregate order (the primary key's, so each
/// aggregate's events come together and in sequence) and sends them decoded, in batches.
async fn read<E: DeserializeOwned + Send + 'static>(
    pool: PgPool,
    aggregate_type: &'static str,
    part: &'static str,
    sender: mpsc::Sender<Vec<Decoded<E>>>,
) -> Result<(), ProjectionError> {
    let mut conn = pool.acquire().await?;
    let sql = format!(
        "select aggregate_id, sequence, event_type, event_version, payload::text as payload
         from events where aggregate_type = $1 and {part} order by aggregate_id, sequence"
    );
    let mut rows = sqlx::query_as::<_, Row>(&sql)
        .bind(aggregate_type)
        .fetch(&mut *conn);
    let mut batch = Vec::with_capacity(READ_BATCH);
    while let Some(row) = rows.try_next().await? {
        let event = decode(&row)?;
        batch.push(Decoded {
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event,
        });
        if batch.len() == READ_BATCH && sender.send(std::mem::take(&mut batch)).await.is_err() {
            // The folding side stopped; its error is reported there.
            return Ok(());
        }
    }
    let _ = sender.send(batch).await;
    Ok(())
}

fn task_failed(e: impl ToString) -> ProjectionError {
    ProjectionError::Database(sqlx::Error::Protocol(e.to_string()))
}

/// Rows in PostgreSQL's binary `COPY ... FROM STDIN` format on a connection of their own, sent
/// in chunks as they grow. Binary rather than text: PostgreSQL takes UUIDs, numbers and
/// timestamps as they are stored instead of parsing them, and nothing needs escaping; each
/// value must be of its column's exact type (`int4` for `integer`, `int8` for `bigint`).
pub struct CopyRows {
    copy: PgCopyIn<PoolConnection<Postgres>>,
    buf: Vec<u8>,
    /// Where the current row's field count goes, and the fields so far.
    row_start: usize,
    fields: i16,
}

/// Bytes collected before they are sent.
const COPY_CHUNK: usize = 1 << 20;
/// The binary format's signature, then no flags and no header extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const POSTGRES_EPOCH: i64 = 946_684_800;

impl CopyRows {
    /// Starts `COPY schema.table (columns) FROM STDIN (FORMAT binary)` on a connection from
    /// `pool`.
    pub async fn start(
        pool: &PgPool,
        schema: &str,
        table: &str,
        columns: &str,
    ) -> Result<Self, sqlx::Error> {
        let copy = pool
            .copy_in_raw(&format!(
                "copy {schema}.{table} ({columns}) from stdin with (format binary)"
            ))
            .await?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
        buf.extend_from_slice(BINARY_HEADER);
        let mut rows = Self {
            copy,
            buf,
            row_start: 0,
            fields: 0,
        };
        rows.begin_row();
        Ok(rows)
    }

    fn begin_row(&mut self) {
        self.row_start = self.buf.len();
        self.buf.extend_from_slice(&0i16.to_be_bytes());
        self.fields = 0;
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = i32::try_from(bytes.len()).expect("a value under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self.fields += 1;
        self
    }

    /// A `text` value.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.field(v.as_bytes())
    }

    /// NULL.
    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self.fields += 1;
        self
    }

    /// A `uuid`.
    pub fn uuid(&mut self, v: uuid::Uuid) -> &mut Self {
        self.field(v.as_bytes())
    }

    /// An optional `uuid`.
    pub fn uuid_or_null(&mut self, v: Option<uuid::Uuid>) -> &mut Self {
        match v {
            Some(id) => self.uuid(id),
            None => self.null(),
        }
    }

    /// An `integer`; panics on a value out of its range (seat counts and positions).
    pub fn int4(&mut self, v: impl TryInto<i32, Error: std::fmt::Debug>) -> &mut Self {
        let v: i32 = v.try_into().expect("a value that fits an integer column");
        self.field(&v.to_be_bytes())
    }

    /// A `bigint`.
    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    /// A `boolean`.
    pub fn boolean(&mut self, v: bool) -> &mut Self {
        self.field(&[u8::from(v)])
    }

    /// A `timestamptz`, to the microsecond and truncated, as PostgreSQL stores it.
    pub fn time(&mut self, v: Option<chrono::DateTime<chrono::Utc>>) -> &mut Self {
        match v {
            Some(t) => {
                let micros = t.timestamp_micros() - POSTGRES_EPOCH * 1_000_000;
                self.field(&micros.to_be_bytes())
            }
            None => self.null(),
        }
    }

    /// A `jsonb` value from its JSON text.
    pub fn jsonb_text(&mut self, json: &str) -> &mut Self {
        // The jsonb binary format: a version byte, then the text.
        let len = i32::try_from(json.len() + 1).expect("a value under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
        self.fields += 1;
        self
    }

    /// A `jsonb` value.
    pub fn jsonb(&mut self, v: &serde_json::Value) -> &mut Self {
        self.jsonb_text(&v.to_string())
    }

    /// Ends the row; sends what has gathered once it is large.
    pub async fn end_row(&mut self) -> Result<(), sqlx::Error> {
        let count = self.fields.to_be_bytes();
        self.buf[self.row_start..self.row_start + 2].copy_from_slice(&count);
        if self.buf.len() >= COPY_CHUNK {
            self.copy.send(self.buf.as_slice()).await?;
            self.buf.clear();
        }
        self.begin_row();
        Ok(())
    }

    /// Sends the rest and ends the copy; returns the rows copied.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        // The row begun after the last one becomes the trailer: a field count of -1.
        debug_assert_eq!(self.fields, 0, "a row was left unfinished");
        self.buf.truncate(self.row_start);
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.copy.send(self.buf.as_slice()).await?;
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
