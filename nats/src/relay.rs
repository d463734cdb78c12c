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
//! One relay is active per namespace, the holder of an advisory lock
//! ([`Leadership`]); others wait and take over when its session goes away. The active relay
//! reads the log and moves its checkpoint on that session only, so one that was deposed
//! without noticing stops at its next statement.
//!
//! When it becomes active, the relay compares the stream with its checkpoint. If the stream's
//! last message comes before the checkpoint (NATS lost its storage, or the most recent part
//! of it), it republishes from that message on ([`Refill`]).

use crate::outbox::Leadership;
use crate::{stream, Error, Namespace};
use async_nats::jetstream::{self, message::PublishMessage};
use marquee_event_store::envelope::Envelope;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use crate::outbox::{read_after, Cursor};

/// Events published per round.
const BATCH: i64 = 500;
/// How long to wait for a notification before looking again anyway (a transaction that held
/// the snapshot's xmin back may have ended without appending anything).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the backlog gauge is refreshed while busy.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Republishing events the stream lost, up to the checkpoint.
///
/// JetStream remembers the ids of deleted messages for its whole duplicate window, and would
/// drop the republished events as duplicates of themselves. So up to the checkpoint they go
/// out as `<type>:<id>:<sequence>:refill-<round>`, where the round is the stream's last
/// sequence when the refill started: it differs from any earlier refill's, since the stream
/// stored messages since, or lost its storage and its memory of ids with it. Within a round,
/// a batch sent again is still deduplicated.
#[derive(Debug)]
struct Refill {
    until: Cursor,
    round: u64,
}

impl Refill {
    fn message_id(refill: Option<&Self>, event: &Envelope) -> Result<String, Error> {
        match refill {
            Some(r) if !r.until.precedes(&Cursor::of(event))? => {
                Ok(format!("{}:refill-{}", event.message_id(), r.round))
            }
            _ => Ok(event.message_id()),
        }
    }
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
    /// Postgres unreachable, the leadership lost) are logged and retried with backoff; they
    /// never end the loop.
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
        let Some(mut leadership) = self.become_leader(shutdown).await? else {
            return Ok(());
        };
        tracing::info!(namespace = self.ns.as_str(), "relay is the active relay");
        metrics::gauge!("marquee_relay_leader").set(1.0);
        let result = self.publish_loop(&mut leadership, shutdown).await;
        metrics::gauge!("marquee_relay_leader").set(0.0);
        // However the loop ended (a failed statement on the lock's session included: the
        // lock may be gone), give the leadership up and compete again from scratch.
        leadership.give_up().await;
        result
    }

    async fn become_leader(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Leadership>, Error> {
        let mut announced = false;
        loop {
            if let Some(leadership) = Leadership::try_take(&self.pool, &self.ns).await? {
                return Ok(Some(leadership));
            }
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
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let (mut cursor, refill) = self.resume_point(leadership).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("events_appended").await?;
        let mut backlog_at = Instant::now() - BACKLOG_EVERY;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            // On the lock's session: this is also the check that the lock is still ours.
            let events = leadership.read_after(&cursor, BATCH).await?;
            if events.is_empty() || backlog_at.elapsed() >= BACKLOG_EVERY {
                self.report_backlog(&cursor).await?;
                backlog_at = Instant::now();
            }
            let Some(last) = events.last() else {
                tokio::select! {
                    _ = listener.recv() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            };
            self.publish(&events, refill.as_ref()).await?;
            cursor = Cursor::of(last);
            leadership.save(&cursor).await?;
        }
    }

    /// Where to publish from: the checkpoint, unless the stream lacks events the checkpoint
    /// says were published. Then from the stream's last message (or the start when it has
    /// none): the stream is appended to in commit order, so what it lost is its most recent
    /// part.
    async fn resume_point(
        &self,
        leadership: &mut Leadership,
    ) -> Result<(Cursor, Option<Refill>), Error> {
        let checkpoint = leadership.checkpoint().await?;
        let mut stream = stream::ensure(&self.js, &self.ns).await?;
        let tail = stream::tail(&mut stream).await?;
        let last = match &tail.message {
            None => Ok(Cursor::start()),
            Some(m) => serde_json::from_slice::<Envelope>(&m.payload)
                .map(|e| Cursor::of(&e))
                .map_err(|e| Error::Invalid(e.to_string())),
        };
        match last.and_then(|last| Ok((last.precedes(&checkpoint)?, last))) {
            Ok((true, last)) => {
                tracing::error!(
                    stream_last = ?last,
                    ?checkpoint,
                    "the JetStream stream lacks events the checkpoint says were published; \
                     republishing them"
                );
                let refill = Refill {
                    until: checkpoint,
                    round: tail.last_sequence,
                };
                Ok((last, Some(refill)))
            }
            Ok((false, _)) => Ok((checkpoint, None)),
            Err(e) => {
                // Something other than the relay wrote there; the checkpoint is all we know.
                tracing::warn!(error = %e, "the stream's last message is not an event; trusting the checkpoint");
                Ok((checkpoint, None))
            }
        }
    }

    /// Publishes a batch and waits for every ack; any failure fails the batch (it is sent
    /// again, and deduplicated).
    async fn publish(&self, events: &[Envelope], refill: Option<&Refill>) -> Result<(), Error> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let body = serde_json::to_vec(event).expect("an envelope serializes");
            let message = PublishMessage::build()
                .payload(body.into())
                .message_id(Refill::message_id(refill, event)?);
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
