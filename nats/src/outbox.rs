//! The outbox as the relay sees it: a cursor in commit order, reading the log after it, and the
//! leadership that alone may move the relay's checkpoint.
//!
//! One relay is active per namespace: the one holding a Postgres advisory lock. A relay can
//! lose that lock without noticing at once (its session killed by `pg_terminate_backend`, a
//! network cut that Postgres saw first) while another relay takes over. So everything that
//! decides what gets published, reading the log and moving the checkpoint, runs on the lock's
//! own session: a session-level advisory lock is held until its session ends (the relay never
//! unlocks it), so a statement that runs on that session runs while the lock is ours, and a
//! deposed relay's next statement fails instead of overwriting the new leader's checkpoint.

use crate::{Error, Namespace};
use marquee_event_store::envelope::{Envelope, COLUMNS};
use sqlx::{PgConnection, PgExecutor, PgPool};

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

    /// The position of an event.
    pub fn of(event: &Envelope) -> Self {
        Self {
            tx_id: event.tx_id.clone(),
            position: event.position,
        }
    }

    /// Whether `self` comes before `other` in commit order. Fails for a `tx_id` that is not
    /// an `xid8` (one read back from the stream may be anything).
    pub fn precedes(&self, other: &Cursor) -> Result<bool, Error> {
        Ok(self.key()? < other.key()?)
    }

    fn key(&self) -> Result<(u64, i64), Error> {
        let tx: u64 = self
            .tx_id
            .parse()
            .map_err(|_| Error::Invalid(format!("{:?} is not a transaction id", self.tx_id)))?;
        Ok((tx, self.position))
    }
}

/// Reads the events after `cursor` that no running transaction can precede any more.
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
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
        .fetch_all(db)
        .await?)
}

/// The relay's advisory lock, held by the session of `conn`. Dropping it closes the session,
/// which releases the lock: a leadership can never go back to a pool still holding it.
pub struct Leadership {
    conn: PgConnection,
    ns: Namespace,
}

impl Leadership {
    /// Takes the namespace's relay lock if no other session holds it.
    pub async fn try_take(pool: &PgPool, ns: &Namespace) -> Result<Option<Self>, Error> {
        let mut conn = pool.acquire().await?;
        let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(ns.relay_lock_key())
            .fetch_one(&mut *conn)
            .await?;
        // Detached, the session is ours alone and ends when the leadership is dropped.
        Ok(got.then(|| Self {
            conn: conn.detach(),
            ns: ns.clone(),
        }))
    }

    /// Reads the log after `cursor` on the lock's session: a deposed relay reads nothing.
    pub async fn read_after(
        &mut self,
        cursor: &Cursor,
        limit: i64,
    ) -> Result<Vec<Envelope>, Error> {
        read_after(&mut self.conn, cursor, limit).await
    }

    /// The stored checkpoint, or the start.
    pub async fn checkpoint(&mut self) -> Result<Cursor, Error> {
        let row = sqlx::query_as::<_, Cursor>(
            "select tx_id::text as tx_id, position from relay_checkpoints where name = $1",
        )
        .bind(self.ns.as_str())
        .fetch_optional(&mut self.conn)
        .await?;
        Ok(row.unwrap_or_else(Cursor::start))
    }

    /// Moves the checkpoint forward to `cursor`, on the lock's session (so only while the lock
    /// is ours). A cursor at or before the stored one changes nothing: while the relay
    /// republishes what the stream lost, and if a slow save ever lands late, the checkpoint
    /// keeps the furthest point known published.
    pub async fn save(&mut self, cursor: &Cursor) -> Result<(), Error> {
        sqlx::query(
            "insert into relay_checkpoints (name, tx_id, position) values ($1, $2::text::xid8, $3)
             on conflict (name) do update
                set tx_id = excluded.tx_id, position = excluded.position, updated_at = now()
                where (relay_checkpoints.tx_id, relay_checkpoints.position)
                    < (excluded.tx_id, excluded.position)",
        )
        .bind(self.ns.as_str())
        .bind(&cursor.tx_id)
        .bind(cursor.position)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Ends the session gracefully, releasing the lock at once.
    pub async fn give_up(self) {
        use sqlx::Connection;
        let _ = self.conn.close().await;
    }
}
