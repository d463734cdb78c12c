//! The outbox relay: publishes the `events` table to JetStream in commit order.
//!
//! The events table is the outbox. The relay reads it in `(tx_id, position)` order, only below
//! `pg_snapshot_xmin(pg_current_snapshot())`: every transaction with a smaller id has ended,
//! so nothing can still commit behind the cursor. (Paging by `position` alone would skip an
//! event whose transaction took its position early and committed late.) Each event goes out
//! with `Nats-Msg-Id = <type>:<id>:<sequence>`; the relay waits for JetStream's acks and only
//! then moves its checkpoint in Postgres. A crash between the two republishes at most one
//! batch, which JetStream's duplicate window and the idempotent projections absorb.
//!
//! One relay is active per namespace: the one holding a Postgres advisory lock on a dedicated
//! connection. Others wait and take over when that connection goes away.

use crate::envelope::{Envelope, COLUMNS};
use crate::{stream, Error, Namespace};
use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Events published per round.
const BATCH: i64 = 500;
/// How long to wait for a notification before looking again anyway (a transaction that held
/// the snapshot's xmin back may have ended without appending anything).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the backlog gauge is refreshed while busy.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// A position in the log: everything up to and including it is published.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Cursor {
    pub tx_id: String,
    pub position: i64,
}

impl Cursor {
    /// Before the first event.
    pub fn start() -> Self {
        Self {
            tx_id: "0".into(),
            position: 0,
        }
    }
}

/// Reads the events after `cursor` that no running transaction can precede any more.
pub async fn read_after(
    pool: &PgPool,
    cursor: &Cursor,
    limit: i64,
) -> Result<Vec<Envelope>, Error> {
    let sql = format!(
        "select {COLUMNS} from events
         where (tx_id, position) > ($1::text::xid8, $2)
           and tx_id < pg_snapshot_xmin(pg_current_snapshot())
         order by tx_id, position
         limit $3"
    );
    Ok(sqlx::query_as::<_, Envelope>(&sql)
        .bind(&cursor.tx_id)
        .bind(cursor.position)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// The relay of one namespace.
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    ns: Namespace,
}

impl Relay {
    pub fn new(pool: PgPool, client: async_nats::Client, ns: Namespace) -> Self {
        Self {
            pool,
            js: jetstream::new(client),
            ns,
        }
    }

    /// Runs until `shutdown` fires: waits to be the leader, then publishes. Errors (NATS or
    /// Postgres unreachable) are logged and retried with backoff; they never end the loop.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "relay stopped; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Becomes the leader (waiting while another relay is), then publishes until shutdown.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        let Some(lock) = self.become_leader(shutdown).await? else {
            return Ok(());
        };
        tracing::info!(namespace = self.ns.as_str(), "relay is the active relay");
        metrics::gauge!("marquee_relay_leader").set(1.0);
        let mut lock = lock;
        let result = self.publish_loop(&mut lock, shutdown).await;
        metrics::gauge!("marquee_relay_leader").set(0.0);
        // However the loop ended, give the leadership up: a pooled connection returned to
        // the pool would keep holding the advisory lock, and no relay could take over.
        let _ = lock.close().await;
        result
    }

    async fn become_leader(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<PoolConnection<Postgres>>, Error> {
        let key = self.ns.relay_lock_key();
        let mut announced = false;
        loop {
            let mut conn = self.pool.acquire().await?;
            let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                return Ok(Some(conn));
            }
            drop(conn);
            if !announced {
                tracing::info!("another relay is active; standing by");
                announced = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return Ok(None),
            }
        }
    }

    async fn publish_loop(
        &self,
        lock: &mut PoolConnection<Postgres>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let stream = stream::ensure(&self.js, &self.ns).await?;
        let mut cursor = self.checkpoint().await?;
        if stream.cached_info().state.messages == 0 && cursor != Cursor::start() {
            // The stream is new or was wiped: everything must go out again.
            tracing::warn!("the JetStream stream is empty; republishing every event");
            cursor = Cursor::start();
        }
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("events_appended").await?;
        let mut backlog_at = Instant::now() - BACKLOG_EVERY;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let events = read_after(&self.pool, &cursor, BATCH).await?;
            if events.is_empty() || backlog_at.elapsed() >= BACKLOG_EVERY {
                self.report_backlog(&cursor).await?;
                backlog_at = Instant::now();
            }
            if events.is_empty() {
                // Still the leader? A dead lock connection means another relay may have taken
                // over; stop and compete again.
                sqlx::query("select 1").execute(&mut **lock).await?;
                tokio::select! {
                    _ = listener.recv() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            self.publish(&events).await?;
            let last = events.last().expect("not empty");
            cursor = Cursor {
                tx_id: last.tx_id.clone(),
                position: last.position,
            };
            self.save(&cursor).await?;
        }
    }

    /// Publishes a batch and waits for every ack; any failure fails the batch (it is sent
    /// again, and deduplicated).
    async fn publish(&self, events: &[Envelope]) -> Result<(), Error> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let body = serde_json::to_vec(event).expect("an envelope serializes");
            let message = PublishMessage::build()
                .payload(body.into())
                .message_id(event.message_id());
            let subject = self.ns.subject(&event.aggregate_type, &event.aggregate_id);
            acks.push(
                self.js
                    .send_publish(subject, message)
                    .await
                    .map_err(Error::nats)?,
            );
        }
        for ack in acks {
            ack.await.map_err(Error::nats)?;
        }
        metrics::counter!("marquee_relay_published_total").increment(events.len() as u64);
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Cursor, Error> {
        let row = sqlx::query_as::<_, Cursor>(
            "select tx_id::text as tx_id, position from relay_checkpoints where name = $1",
        )
        .bind(self.ns.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.unwrap_or_else(Cursor::start))
    }

    async fn save(&self, cursor: &Cursor) -> Result<(), Error> {
        sqlx::query(
            "insert into relay_checkpoints (name, tx_id, position) values ($1, $2::text::xid8, $3)
             on conflict (name) do update
                set tx_id = excluded.tx_id, position = excluded.position, updated_at = now()",
        )
        .bind(self.ns.as_str())
        .bind(&cursor.tx_id)
        .bind(cursor.position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn report_backlog(&self, cursor: &Cursor) -> Result<(), Error> {
        let backlog: i64 = sqlx::query_scalar(
            "select count(*) from events where (tx_id, position) > ($1::text::xid8, $2)",
        )
        .bind(&cursor.tx_id)
        .bind(cursor.position)
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("marquee_relay_backlog").set(backlog as f64);
        Ok(())
    }
}
