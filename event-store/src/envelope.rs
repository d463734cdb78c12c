//! An event as stored in the `events` table: the one row type every reader of the log uses
//! (history, the relay, which publishes it to JetStream as JSON, and the projections).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored event. The JetStream message body is this as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Envelope {
    /// Global position (insert order); with `tx_id`, the commit order.
    pub position: i64,
    /// The writing transaction's id (`xid8`) as text.
    pub tx_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// The columns to select for an [`Envelope`].
pub const COLUMNS: &str = "position, tx_id::text as tx_id, aggregate_type, aggregate_id, \
                           sequence, event_type, event_version, payload, metadata, recorded_at";

impl Envelope {
    /// The JetStream deduplication id: the same event published twice is stored once.
    pub fn message_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }

    /// Seconds from the event's commit (as near as the database tells) to `now`.
    pub fn age_seconds(&self, now: DateTime<Utc>) -> f64 {
        (now - self.recorded_at).num_microseconds().unwrap_or(0) as f64 / 1e6
    }
}
