//! Reading the event log for analysts: pages in commit order with filters, a showtime as it
//! stood at a past instant, and the story of one seat.
//!
//! Paging is by `position` below `pg_snapshot_xmin(pg_current_snapshot())`. Appends take their
//! positions in transaction-id order (`append_events`), so the events of every transaction
//! that has ended form a prefix of the log: a page never shows an event after one that a
//! later page would show before it, and no event is skipped when a transaction commits late.

use crate::envelope::{Envelope, COLUMNS};
use crate::error::StoreError;
use crate::event_store::to_envelope;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use marquee_domain::showtime::{Showtime, ShowtimeEvent};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

/// Which events to read.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

fn push_filter(b: &mut QueryBuilder<'_, Postgres>, f: &Filter) {
    if let Some(t) = &f.aggregate_type {
        b.push(" and aggregate_type = ").push_bind(t.clone());
    }
    if let Some(id) = &f.aggregate_id {
        b.push(" and aggregate_id = ").push_bind(id.clone());
    }
    if let Some(t) = &f.event_type {
        b.push(" and event_type = ").push_bind(t.clone());
    }
    if let Some(from) = f.from {
        b.push(" and recorded_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        b.push(" and recorded_at < ").push_bind(to);
    }
}

/// Up to `limit` events after position `after`, in commit order.
pub async fn page(
    pool: &PgPool,
    filter: &Filter,
    after: i64,
    limit: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let mut b = QueryBuilder::new(format!("select {COLUMNS} from events where position > "));
    b.push_bind(after);
    b.push(" and tx_id < pg_snapshot_xmin(pg_current_snapshot())");
    push_filter(&mut b, filter);
    b.push(" order by position limit ").push_bind(limit);
    b.build_query_as().fetch_all(pool).await
}

/// How many events match `filter` (for progress reports).
pub async fn count(pool: &PgPool, filter: &Filter, after: i64) -> Result<i64, sqlx::Error> {
    let mut b = QueryBuilder::new("select count(*) from events where position > ");
    b.push_bind(after);
    push_filter(&mut b, filter);
    b.build_query_scalar().fetch_one(pool).await
}

/// The payload as analysts want it: the event's own fields, without the enum wrapper the
/// domain serializes (`{"SeatsHeld": {...}}` becomes `{...}`).
pub fn fields(event: &Envelope) -> Value {
    match &event.payload {
        Value::Object(map) if map.len() == 1 && map.contains_key(&event.event_type) => {
            map[&event.event_type].clone()
        }
        other => other.clone(),
    }
}

/// A showtime's events recorded up to `until`, with their log rows.
pub async fn showtime_events(
    pool: &PgPool,
    showtime: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<(Envelope, ShowtimeEvent)>, StoreError> {
    let rows: Vec<Envelope> = sqlx::query_as(&format!(
        "select {COLUMNS} from events
         where aggregate_type = $1 and aggregate_id = $2 and ($3::timestamptz is null or recorded_at <= $3)
         order by sequence"
    ))
    .bind(<Showtime as Aggregate>::TYPE)
    .bind(showtime)
    .bind(until)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let serialized = SerializedEvent::new(
                row.aggregate_id.clone(),
                row.sequence as usize,
                row.aggregate_type.clone(),
                row.event_type.clone(),
                row.event_version.clone(),
                row.payload.clone(),
                row.metadata.clone(),
            );
            let event = to_envelope::<Showtime>(serialized)?.payload;
            Ok((row, event))
        })
        .collect()
}

/// The showtime as it stood at `at`: every event recorded by then, folded.
pub async fn showtime_as_of(
    pool: &PgPool,
    showtime: &str,
    at: DateTime<Utc>,
) -> Result<Option<Showtime>, StoreError> {
    let events = showtime_events(pool, showtime, Some(at)).await?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut state = Showtime::default();
    for (_, e) in events {
        state.apply(e);
    }
    Ok(Some(state))
}
