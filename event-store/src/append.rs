//! Appending a showtime writer's batch: its events and the lookup rows they imply, in one
//! transaction. [`Appender::append`] is the one way showtime batches reach the log; whether a
//! batch goes alone, grouped with other showtimes' batches or statement by statement is
//! decided here.
//!
//! - A batch with a payment starting or failing, or a refund, is written statement by
//!   statement in one transaction, in event order ([`booking_index::record`]).
//! - Any other batch is one statement with its lookups (`append_showtime_batch`, see its
//!   migration): one round trip and one commit.
//! - With group commit on, such batches of many showtimes share one statement and one commit.
//!   A hot showtime's writer gathers hundreds of commands into each batch, so one commit per
//!   batch is cheap per command; spread over many showtimes the batches are small (a command
//!   or two each) and a commit per batch made commits the limit: every batch paid a round
//!   trip, a function call, its locks and an fsync of its own. So the writers of a process
//!   hand their batches to one committer, which writes whatever has gathered meanwhile in one
//!   statement (`append_showtime_batches`, see its migration).
//!
//! Up to [`IN_FLIGHT`] groups are written at once; while they are, new batches gather into the
//! next group, so the busier the process, the larger the groups. A batch with no other beside
//! it (a single hot showtime) skips the committer, and a group of one batch goes the
//! single-batch way. The batches stay independent: one whose showtime another process appended
//! to first is answered [`StoreError::Conflict`] (its writer catches up and decides again)
//! while the others of its group are written.

use crate::booking_index::{self, LookupColumns, Lookups};
use crate::db::PgQuery;
use crate::error::StoreError;
use crate::metadata::Metadata;
use cqrs_es::{Aggregate, DomainEvent};
use marquee_domain::showtime::{Showtime, ShowtimeEvent};
use marquee_domain::ShowtimeId;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// An event ready to be appended.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// Serializes `events` of aggregate `A` as sequences `after + 1, after + 2, ...`.
pub fn to_new_events<A: Aggregate>(
    id: &str,
    after: usize,
    events: &[A::Event],
    meta: &Metadata,
) -> Vec<NewEvent> {
    let metadata = meta.to_value();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| NewEvent {
            aggregate_type: A::TYPE,
            aggregate_id: id.to_owned(),
            sequence: (after + i + 1) as i64,
            event_type: e.event_type(),
            event_version: e.event_version(),
            payload: serde_json::to_value(e).expect("domain events serialize to JSON"),
            metadata: metadata.clone(),
        })
        .collect()
}

/// Appends events inside `tx` with one statement. A sequence that is already taken fails the
/// whole statement with [`StoreError::Conflict`].
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // append_events (see its migration) inserts under a short lock so that positions follow
    // transaction ids; readers of the log rely on it.
    let query = sqlx::query("select append_events($1, $2, $3, $4, $5, $6, $7)");
    EventColumns::of(events)
        .bind(query)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_insert)?;
    Ok(())
}

/// Events as the column arrays `append_events` takes, in its parameter order.
pub struct EventColumns {
    aggregate_types: Vec<&'static str>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    payloads: Vec<Value>,
    metadatas: Vec<Value>,
}

impl EventColumns {
    pub fn of(events: &[NewEvent]) -> Self {
        let col = |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
        Self {
            aggregate_types: events.iter().map(|e| e.aggregate_type).collect(),
            aggregate_ids: col(|e| e.aggregate_id.clone()),
            sequences: events.iter().map(|e| e.sequence).collect(),
            event_types: col(|e| e.event_type.clone()),
            event_versions: col(|e| e.event_version.clone()),
            payloads: events.iter().map(|e| e.payload.clone()).collect(),
            metadatas: events.iter().map(|e| e.metadata.clone()).collect(),
        }
    }

    /// Binds the seven arrays as the next parameters of `query`.
    pub fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.aggregate_types)
            .bind(self.aggregate_ids)
            .bind(self.sequences)
            .bind(self.event_types)
            .bind(self.event_versions)
            .bind(self.payloads)
            .bind(self.metadatas)
    }
}

/// Most batches written in one statement.
const MAX_GROUP: usize = 64;
/// Groups written at once, each on a connection of its own.
///
/// One: while a group is written, the next gathers every batch that arrives meanwhile, so
/// the busier the process, the larger its groups and the fewer its statements. More at once
/// made groups smaller and served fewer holds/s on many showtimes (BENCHMARKS.md, "One group
/// commit in flight, not four").
pub const IN_FLIGHT: usize = 1;

/// One writer's batch: the events it appends and the lookup rows they imply.
pub struct Batch {
    pub showtime: ShowtimeId,
    /// Consecutive sequences of the showtime, starting after the last one its writer knows.
    pub rows: Vec<NewEvent>,
    pub lookups: Lookups,
}

/// Appends the batches of a process's showtime writers (see the module doc).
#[derive(Clone)]
pub struct Appender {
    pool: PgPool,
    /// Where batches of common events go when group commit is on.
    committer: Option<Committer>,
}

impl Appender {
    /// Each batch with a commit of its own.
    pub fn alone(pool: PgPool) -> Self {
        Self {
            pool,
            committer: None,
        }
    }

    /// Batches of common events with other showtimes' batches, one commit for a group
    /// (starts the committer task, which ends with the last handle).
    pub fn grouped(pool: PgPool) -> Self {
        Self {
            committer: Some(Committer::start(pool.clone())),
            pool,
        }
    }

    /// Appends the events a showtime's writer recorded, each command's with its metadata, as
    /// the sequences after `after` (the last one the writer knows), with the lookup rows they
    /// imply, in one transaction; returns how many it appended, once they are committed. A
    /// sequence that is already taken fails it whole with [`StoreError::Conflict`].
    pub async fn append<'a>(
        &self,
        showtime: ShowtimeId,
        after: usize,
        recorded: impl IntoIterator<Item = (&'a [ShowtimeEvent], &'a Metadata)>,
    ) -> Result<usize, StoreError> {
        let id = showtime.to_string();
        let mut rows = Vec::new();
        let mut events = Vec::new();
        for (of_command, meta) in recorded {
            rows.extend(to_new_events::<Showtime>(
                &id,
                after + rows.len(),
                of_command,
                meta,
            ));
            events.extend(of_command.iter().cloned());
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let appended = rows.len();
        self.append_rows(showtime, rows, &events).await?;
        Ok(appended)
    }

    /// The rows of [`Appender::append`], timed by the way they went.
    async fn append_rows(
        &self,
        showtime: ShowtimeId,
        rows: Vec<NewEvent>,
        events: &[ShowtimeEvent],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let (way, result) = self.append_by_kind(showtime, rows, events).await;
        metrics::histogram!("marquee_writer_append_seconds", "way" => way)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// [`Appender::append`], and which way the events went: `statement` (one statement, maybe
    /// through the committer) or `transaction` (statement by statement).
    async fn append_by_kind(
        &self,
        showtime: ShowtimeId,
        rows: Vec<NewEvent>,
        events: &[ShowtimeEvent],
    ) -> (&'static str, Result<(), StoreError>) {
        if let Some(lookups) = booking_index::gather(events) {
            let batch = Batch {
                showtime,
                rows,
                lookups,
            };
            let written = match &self.committer {
                Some(committer) => committer.append(batch).await,
                None => batch.write_alone(&self.pool).await,
            };
            return ("statement", written);
        }
        let written = async {
            let mut tx = self.pool.begin().await?;
            insert(&mut tx, &rows).await?;
            booking_index::record(&mut tx, showtime, events).await?;
            tx.commit().await?;
            Ok(())
        };
        ("transaction", written.await)
    }
}

struct Pending {
    batch: Batch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Hands batches to the process's committer task.
#[derive(Clone)]
struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
    pool: PgPool,
    /// Batches being appended right now, through the committer or not.
    appending: Arc<AtomicUsize>,
}

impl Committer {
    /// Starts the committer task; it ends when the last handle is dropped.
    fn start(pool: PgPool) -> Self {
        // Unbounded: each writer has at most one batch waiting here, so the queue is bounded
        // by the number of writers (and each writer's own queue is bounded).
        let (queue, batches) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), batches));
        Self {
            queue,
            pool,
            appending: Arc::default(),
        }
    }

    /// Appends a batch with the batches of other writers; returns once it is committed.
    ///
    /// A batch that no other is being appended beside (one hot showtime) is written by its
    /// own writer: the way through the committer is two more waits in the runtime's queue,
    /// which on a busy process is longer than the statement, and there is nothing to share.
    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        let appending = Appending::enter(&self.appending);
        if appending.alone {
            return batch.write_as_group_of_one(&self.pool).await;
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { batch, reply })
            .map_err(|_| StoreError::Other("the committer stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Other("the committer stopped".into())))
    }
}

/// Counts a batch as being appended until dropped.
struct Appending<'a> {
    count: &'a AtomicUsize,
    /// Whether no other batch was being appended when this one began.
    alone: bool,
}

impl<'a> Appending<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let before = count.fetch_add(1, Ordering::AcqRel);
        Self {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn run(pool: PgPool, mut batches: mpsc::UnboundedReceiver<Pending>) {
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Room first, then the batches: while every group is being written, the next one
        // gathers in the queue.
        let permit = room.clone().acquire_owned().await.expect("never closed");
        let Some(first) = batches.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match batches.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit(&pool, group).await;
            drop(permit);
        });
    }
}

impl Batch {
    /// Writes this batch on its own in one statement, which commits on its own (see
    /// `migrations/*_append_showtime_batch.sql`). A sequence that is already taken fails it
    /// whole with [`StoreError::Conflict`].
    pub async fn write_alone(self, pool: &PgPool) -> Result<(), StoreError> {
        let query = sqlx::query(
            "select append_showtime_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                          $13, $14, $15, $16)",
        );
        let query = EventColumns::of(&self.rows)
            .bind(query)
            .bind(self.showtime.0);
        self.lookups
            .bind(query)
            .execute(pool)
            .await
            .map_err(StoreError::from_insert)?;
        Ok(())
    }

    /// [`Batch::write_alone`], counted as a group of one.
    async fn write_as_group_of_one(self, pool: &PgPool) -> Result<(), StoreError> {
        metrics::histogram!("marquee_group_commit_batches_size").record(1.0);
        self.write_alone(pool).await
    }
}

async fn commit(pool: &PgPool, mut group: Vec<Pending>) {
    if group.len() == 1 {
        let Pending { batch, reply } = group.pop().expect("one batch");
        let _ = reply.send(batch.write_as_group_of_one(pool).await);
        return;
    }
    metrics::histogram!("marquee_group_commit_batches_size").record(group.len() as f64);
    let (batches, replies): (Vec<Batch>, Vec<_>) =
        group.into_iter().map(|p| (p.batch, p.reply)).unzip();
    match write(pool, batches).await {
        Ok(written) => {
            for (written, reply) in written.into_iter().zip(replies) {
                let _ = reply.send(if written {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                });
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}

/// Writes the batches (of different showtimes) in one statement, its own transaction. For
/// each batch, whether it was written: `false` when another process had appended to its
/// showtime first, so none of it was.
pub async fn write(pool: &PgPool, batches: Vec<Batch>) -> Result<Vec<bool>, StoreError> {
    let count = batches.len();
    let mut ids = Vec::with_capacity(count);
    let mut firsts = Vec::with_capacity(count);
    let mut events = GroupEvents::default();
    let mut lookups = LookupColumns::default();
    for (i, batch) in batches.into_iter().enumerate() {
        let number = i as i32 + 1;
        ids.push(batch.showtime.to_string());
        firsts.push(batch.rows.first().map_or(1, |r| r.sequence));
        events.add(number, batch.rows);
        lookups.add(number, batch.lookups);
    }
    let query = sqlx::query(
        "select append_showtime_batches($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                        $13, $14, $15, $16, $17, $18, $19, $20)",
    );
    let query = query
        .bind(ids)
        .bind(firsts)
        .bind(events.batches)
        .bind(events.sequences)
        .bind(events.types)
        .bind(events.versions)
        .bind(events.payloads)
        .bind(events.metadatas);
    let row = lookups
        .bind(query)
        .fetch_one(pool)
        .await
        .map_err(StoreError::from_insert)?;
    let taken: Vec<i32> = row.try_get(0)?;
    Ok((1..=count as i32).map(|n| !taken.contains(&n)).collect())
}

/// The events of several batches as column arrays, each row with its batch's number.
#[derive(Default)]
struct GroupEvents {
    batches: Vec<i32>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<serde_json::Value>,
    metadatas: Vec<serde_json::Value>,
}

impl GroupEvents {
    fn add(&mut self, batch: i32, rows: Vec<NewEvent>) {
        for row in rows {
            self.batches.push(batch);
            self.sequences.push(row.sequence);
            self.types.push(row.event_type);
            self.versions.push(row.event_version);
            self.payloads.push(row.payload);
            self.metadatas.push(row.metadata);
        }
    }
}
