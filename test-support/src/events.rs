//! Appending events for tests: rows the engine would not write for a test (an event of an
//! older version, a forged second sale, events of a made-up aggregate type), written through
//! the store's own append (`event_store::insert`, which calls `append_events`), so that they
//! take their positions and transaction ids under the same rules as every other row.

use marquee_event_store::append::insert;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

pub use marquee_event_store::append::NewEvent;

/// An event to append, with empty metadata (no actor, no command).
pub fn event(
    aggregate_type: &'static str,
    aggregate_id: impl ToString,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> NewEvent {
    NewEvent {
        aggregate_type,
        aggregate_id: aggregate_id.to_string(),
        sequence,
        event_type: event_type.to_owned(),
        event_version: event_version.to_owned(),
        payload,
        metadata: Value::Object(Default::default()),
    }
}

/// Appends `events` in a transaction of their own, committed when this returns.
pub async fn append(pool: &PgPool, events: &[NewEvent]) {
    let mut tx = pool.begin().await.expect("begin an append");
    append_in(&mut tx, events).await;
    tx.commit().await.expect("commit an append");
}

/// Appends `events` inside `tx`, which the caller commits (or keeps open, to play a writer
/// that commits late).
pub async fn append_in(tx: &mut Transaction<'_, Postgres>, events: &[NewEvent]) {
    insert(tx, events).await.expect("the test's events append");
}
