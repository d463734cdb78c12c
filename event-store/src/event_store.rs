//! The event store: loading aggregates through postgres-es, and appending events.
//!
//! Loading uses postgres-es's `PostgresEventRepository` as is. Appending is done here, into
//! the same `events` table and columns, because Marquee needs two things postgres-es's
//! `persist` does not give: one transaction holding events of two aggregates (a theater's
//! slot and the new showtime), and one multi-row insert for a whole batch of the showtime
//! writer (one round trip and one fsync for hundreds of events). The table's primary key stays
//! the optimistic-concurrency check for both paths.

use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use futures::TryStreamExt;
use marquee_domain::showtime::{Showtime, ShowtimeEvent};
use marquee_domain::{CommandName, ReservationId, ShowtimeId, UserId};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use uuid::Uuid;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the same aggregate first.
    #[error("another writer appended to the aggregate first")]
    Conflict,
    /// Postgres cannot be reached right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("event store error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Database(e)
        }
    }
}

impl From<PersistenceError> for StoreError {
    fn from(e: PersistenceError) -> Self {
        match e {
            PersistenceError::ConnectionError(cause) => Self::Unavailable(cause.to_string()),
            PersistenceError::UnknownError(cause) => match cause.downcast::<sqlx::Error>() {
                Ok(sqlx) => (*sqlx).into(),
                Err(other) => Self::Other(other.to_string()),
            },
            other => Self::Other(other.to_string()),
        }
    }
}

/// Whether `e` means PostgreSQL cannot be reached or is restarting (a connection refused,
/// reset or timed out, the pool empty, or the server shutting down or starting up), as
/// opposed to a statement that failed: worth a 503 and a retry, never a 500.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot
        // connect now.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl StoreError {
    /// An insert's error: a taken key is [`StoreError::Conflict`].
    pub fn from_insert(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => Self::Conflict,
            _ => e.into(),
        }
    }

    /// The same error again, for answering every caller of a failed batch.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Conflict => Self::Conflict,
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            other => Self::Other(other.to_string()),
        }
    }
}

/// Who caused a change and which request it belongs to; stored as each event's metadata.
/// Ids only, never personal data.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub actor: Actor,
    /// The command that caused the events, and the id of that one execution of it: every
    /// event one command causes shares it (a cancellation and the refunds it caused, say).
    pub command: &'static str,
    pub causation_id: Uuid,
    /// The HTTP request's id (echoed in its `x-request-id` response header), or a fresh id for
    /// work the engine does on its own.
    pub correlation_id: String,
}

/// Who caused a change.
#[derive(Clone, Copy, Debug)]
pub enum Actor {
    User(UserId),
    Timer,
    System,
}

impl Metadata {
    /// Metadata for work the engine does on its own (the expiry timer, startup).
    pub fn engine(actor: Actor) -> Self {
        Self {
            actor,
            command: "",
            causation_id: Uuid::nil(),
            correlation_id: Uuid::now_v7().to_string(),
        }
    }

    /// Metadata for a change `user` asked for in the request `request_id`.
    pub fn for_user(user: UserId, request_id: String) -> Self {
        Self {
            actor: Actor::User(user),
            command: "",
            causation_id: Uuid::nil(),
            correlation_id: request_id,
        }
    }

    /// The same metadata for one execution of `command`.
    pub fn caused_by(&self, command: &impl CommandName) -> Self {
        self.named(command.name())
    }

    /// The same metadata for one execution of the command called `name`.
    pub fn named(&self, name: &'static str) -> Self {
        Self {
            command: name,
            causation_id: Uuid::now_v7(),
            ..self.clone()
        }
    }

    fn to_value(&self) -> Value {
        let actor = match self.actor {
            Actor::User(id) => format!("user:{id}"),
            Actor::Timer => "timer".into(),
            Actor::System => "system".into(),
        };
        serde_json::json!({
            "actor": actor,
            "correlation_id": self.correlation_id,
            "command": self.command,
            "causation_id": self.causation_id.to_string(),
        })
    }
}

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

/// A statement with its parameters bound so far.
pub type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Loads aggregates and runs commands against them.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    repo: Arc<PostgresEventRepository>,
}

/// A showtime loaded by [`EventStore::load_showtime`].
#[derive(Debug)]
pub struct LoadedShowtime {
    pub showtime: Showtime,
    /// The sequence of its last event (0 when it has none).
    pub version: usize,
    /// The sequence of the snapshot it started from (0: folded from the first event).
    pub snapshot: usize,
}

/// How often a command is decided again after losing a race to another writer.
const MAX_ATTEMPTS: usize = 8;

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        let repo = Arc::new(PostgresEventRepository::new(pool.clone()));
        Self { pool, repo }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Folds an aggregate from its events; returns it with its last sequence (0 when new).
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<(A, usize), StoreError> {
        let events = self
            .repo
            .get_events::<A>(id)
            .await
            .map_err(StoreError::from)?;
        let mut aggregate = A::default();
        let mut version = 0;
        for event in events {
            version = event.sequence;
            let envelope = to_envelope::<A>(event)?;
            aggregate.apply(envelope.payload);
        }
        Ok((aggregate, version))
    }

    /// The events of an aggregate after sequence `after`, with their sequences.
    pub async fn events_after<A: Aggregate>(
        &self,
        id: &str,
        after: usize,
    ) -> Result<Vec<(usize, A::Event)>, StoreError> {
        let events = self
            .repo
            .get_last_events::<A>(id, after)
            .await
            .map_err(StoreError::from)?;
        events
            .into_iter()
            .map(|e| Ok((e.sequence, to_envelope::<A>(e)?.payload)))
            .collect()
    }

    /// A showtime as of its last stored event: folded from its latest snapshot of this
    /// build's format (see `migrations/*_showtime_snapshots.sql`) and the events after it,
    /// or from its whole log when it has none it can read.
    pub async fn load_showtime(&self, id: ShowtimeId) -> Result<LoadedShowtime, StoreError> {
        let (showtime, snapshot) = self.snapshot(&id.to_string()).await?.unwrap_or_default();
        self.fold_showtime(id, showtime, snapshot).await
    }

    /// `showtime`, the state as of event `after`, with the events after it folded in.
    pub async fn fold_showtime(
        &self,
        id: ShowtimeId,
        mut showtime: Showtime,
        after: usize,
    ) -> Result<LoadedShowtime, StoreError> {
        let mut version = after;
        // Folded as the rows arrive: a long log is never held in memory at once (a million
        // events read whole took 2.8 GB).
        let mut rows = sqlx::query_as::<_, (i64, String, String, Value)>(
            "select sequence, event_type, event_version, payload from events
             where aggregate_type = 'Showtime' and aggregate_id = $1 and sequence > $2
             order by sequence",
        )
        .bind(id.to_string())
        .bind(after as i64)
        .fetch(&self.pool);
        while let Some((sequence, event_type, event_version, payload)) = rows.try_next().await? {
            showtime.apply(showtime_event(&event_type, &event_version, payload)?);
            version = sequence as usize;
        }
        Ok(LoadedShowtime {
            showtime,
            version,
            snapshot: after,
        })
    }

    /// The latest snapshot of a showtime with its sequence, if there is one this build reads.
    async fn snapshot(&self, key: &str) -> Result<Option<(Showtime, usize)>, StoreError> {
        let row: Option<(i64, Value)> = sqlx::query_as(
            "select sequence, state from showtime_snapshots where showtime_id = $1 and format = $2",
        )
        .bind(key)
        .bind(Showtime::SNAPSHOT_FORMAT)
        .fetch_optional(&self.pool)
        .await?;
        let Some((sequence, state)) = row else {
            return Ok(None);
        };
        match serde_json::from_value(state) {
            Ok(showtime) => Ok(Some((showtime, sequence as usize))),
            Err(e) => {
                tracing::warn!(showtime = key, error = %e, "a snapshot that cannot be read is ignored; folding the whole log");
                Ok(None)
            }
        }
    }

    /// Stores `state`, the showtime as of its event `sequence`, as its latest snapshot (an
    /// older one is replaced, a newer one kept).
    pub async fn save_snapshot(
        &self,
        id: ShowtimeId,
        sequence: usize,
        state: Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into showtime_snapshots (showtime_id, sequence, format, state)
             values ($1, $2, $3, $4)
             on conflict (showtime_id) do update
                 set sequence = excluded.sequence, format = excluded.format,
                     state = excluded.state, taken_at = now()
                 where showtime_snapshots.sequence < excluded.sequence
                    or showtime_snapshots.format <> excluded.format",
        )
        .bind(id.to_string())
        .bind(sequence as i64)
        .bind(Showtime::SNAPSHOT_FORMAT)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The events that shaped one reservation's hold, in order (see
    /// `migrations/*_reservation_events.sql`, whose index this query must match): how a hold
    /// its showtime no longer keeps (released or run out) is read back.
    pub async fn reservation_events(
        &self,
        showtime: ShowtimeId,
        reservation: ReservationId,
    ) -> Result<Vec<ShowtimeEvent>, StoreError> {
        let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
            "select aggregate_id, event_type, event_version, payload
             from events
             where aggregate_type = 'Showtime'
               and event_type in ('SeatsHeld', 'HoldReleased', 'HoldExpired',
                                  'PaymentStarted', 'PaymentFailed')
               and (payload -> event_type ->> 'reservation_id')::uuid = $1
             order by sequence",
        )
        .bind(reservation.0)
        .fetch_all(&self.pool)
        .await?;
        // The showtime is checked here, not in the query: with it there, the planner may
        // prefer the key's range over the whole showtime to the reservation's few rows.
        let showtime = showtime.to_string();
        rows.into_iter()
            .filter(|row| row.0 == showtime)
            .map(|(_, event_type, version, payload)| showtime_event(&event_type, &version, payload))
            .collect()
    }

    /// The last sequence stored for an aggregate (0 when it has no events).
    ///
    /// Written as `order by ... desc limit 1`, not `max(sequence)`: PostgreSQL plans `max` as an
    /// aggregate over every row of the aggregate whenever its statistics say the aggregate is
    /// small (a new hot showtime before autovacuum's next analyze), which took 6 ms a call on
    /// a showtime of 35,000 events against 0.02 ms for the backward index scan.
    pub async fn last_sequence(&self, aggregate_type: &str, id: &str) -> Result<usize, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "select sequence from events where aggregate_type = $1 and aggregate_id = $2
             order by sequence desc limit 1",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(last.unwrap_or(0) as usize)
    }

    /// Load, decide and append, again on a conflict with another writer. The stock cqrs-es
    /// path, fit for aggregates that see little contention (theaters, movies).
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &Metadata,
    ) -> Result<Result<(A, Vec<A::Event>), A::Error>, StoreError>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone + CommandName,
    {
        let meta = &meta.caused_by(&command);
        for _ in 0..MAX_ATTEMPTS {
            let (mut aggregate, version) = self.load::<A>(id).await?;
            let sink = EventSink::default();
            if let Err(e) = aggregate.handle(command.clone(), &(), &sink).await {
                return Ok(Err(e));
            }
            let events = sink.collect().await;
            let mut tx = self.pool.begin().await?;
            match insert(&mut tx, &to_new_events::<A>(id, version, &events, meta)).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
            match tx.commit().await {
                Ok(()) => return Ok(Ok((aggregate, events))),
                Err(e) => return Err(StoreError::from_insert(e)),
            }
        }
        Err(StoreError::Other(format!(
            "gave up on {} {id} after {MAX_ATTEMPTS} conflicting attempts",
            A::TYPE
        )))
    }

    /// Decides on aggregate `A`'s current state what to append, possibly to other aggregates
    /// too (a theater's booked slot and the new showtime), and appends it all in one
    /// transaction. `decide` gets the aggregate and its version and returns the rows with a
    /// value of its own; when another writer appended first, the aggregate is loaded and
    /// decided on again. `None` when that kept happening.
    pub async fn append_deciding<A, T, E>(
        &self,
        id: &str,
        mut decide: impl FnMut(&A, usize) -> Result<(Vec<NewEvent>, T), E>,
    ) -> Result<Option<T>, E>
    where
        A: Aggregate,
        E: From<StoreError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let (aggregate, version) = self.load::<A>(id).await?;
            let (rows, value) = decide(&aggregate, version)?;
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            match insert(&mut tx, &rows).await {
                Err(StoreError::Conflict) => continue,
                other => other?,
            }
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Some(value));
        }
        Ok(None)
    }
}

/// A stored showtime event's payload as the current `ShowtimeEvent`, upcast first.
fn showtime_event(
    event_type: &str,
    version: &str,
    mut payload: Value,
) -> Result<ShowtimeEvent, StoreError> {
    marquee_domain::upcast::upcast(event_type, version, &mut payload)
        .map_err(|e| StoreError::Other(e.to_string()))?;
    serde_json::from_value(payload).map_err(|e| StoreError::Other(e.to_string()))
}

/// Turns a stored row into a typed envelope, upcasting an older shape first.
pub fn to_envelope<A: Aggregate>(
    mut event: SerializedEvent,
) -> Result<EventEnvelope<A>, StoreError> {
    let version =
        marquee_domain::upcast::upcast(&event.event_type, &event.event_version, &mut event.payload)
            .map_err(|e| StoreError::Other(e.to_string()))?;
    event.event_version = version.to_owned();
    EventEnvelope::<A>::try_from(event).map_err(|e| StoreError::Other(e.to_string()))
}

/// The current time; the one place the command side reads the clock for decisions.
pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}
