//! The event store: loading aggregates through postgres-es, and appending events.
//!
//! Loading uses postgres-es's `PostgresEventRepository` as is. Appending is done here, into
//! the same `events` table and columns, because Marquee needs two things postgres-es's
//! `persist` does not give: one transaction holding events of two aggregates (a theater's
//! slot and the new showtime), and one multi-row insert for a whole batch of the showtime
//! writer (one round trip and one fsync for hundreds of events). The table's primary key stays
//! the optimistic-concurrency check for both paths.

use crate::append::{insert, to_new_events, NewEvent};
use crate::booking_index;
use crate::error::StoreError;
use crate::metadata::Metadata;
use crate::reservation_cache::Owner;
use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope};
use futures::TryStreamExt;
use marquee_domain::showtime::{Showtime, ShowtimeEvent};
use marquee_domain::{CommandName, ReservationId, ShowtimeId, TicketId};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;

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

    /// The showtime and customer of a reservation, from its lookup row.
    pub async fn reservation_owner(&self, id: ReservationId) -> Result<Option<Owner>, StoreError> {
        Ok(booking_index::reservation_owner(&self.pool, id).await?)
    }

    /// The showtime and customer of a ticket, from its lookup row.
    pub async fn ticket_owner(&self, id: TicketId) -> Result<Option<Owner>, StoreError> {
        Ok(booking_index::ticket_owner(&self.pool, id).await?)
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
