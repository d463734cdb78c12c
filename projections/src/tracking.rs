//! Applying events exactly once per projection and aggregate.
//!
//! Each projection keeps, per aggregate, the last sequence it applied (`projection_progress`),
//! updated in the same transaction as the read model. So an event delivered twice is skipped,
//! and an event that arrives after a gap (its predecessor not applied yet: JetStream
//! redelivers a failed message later, after its successors) first has the missing events read
//! from the events table, the source of truth, and applied in order. Nothing is ever skipped.
//!
//! An aggregate whose event keeps failing is parked (`parked_events`): its later events are
//! acknowledged but not applied, and they are applied from the events table once the
//! aggregate is unparked ([`retry_parked`], run when a projector starts).

use crate::projection::{Projection, ProjectionError};
use async_trait::async_trait;
use marquee_event_store::envelope::Envelope;
use marquee_event_store::envelope::COLUMNS;
use marquee_nats::consumer::{self, Failure, Handler, Spec};
use marquee_nats::Namespace;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Applies `event` unless it was applied already; fills a gap before it from the events table.
/// Returns whether anything was applied. Runs inside the caller's transaction.
pub async fn apply_tracked(
    projection: &dyn Projection,
    event: &Envelope,
    db: &mut PgConnection,
) -> Result<bool, ProjectionError> {
    Ok(apply_batch(projection, std::slice::from_ref(event), db).await? > 0)
}

/// Applies a batch of events (of the projection's aggregate type, in log order), each unless
/// it was applied already, inside the caller's transaction; returns how many of them it
/// applied.
///
/// Per aggregate of the batch, one statement reads (and locks) its progress row and one
/// writes it back, and the aggregate's events are applied as one run
/// ([`Projection::apply_run`]), with any gap before them filled from the events table.
/// Aggregates go in id order, so two projector processes lock their rows in the same order.
pub async fn apply_batch(
    projection: &dyn Projection,
    events: &[Envelope],
    db: &mut PgConnection,
) -> Result<u64, ProjectionError> {
    let mut by_aggregate: BTreeMap<(&str, &str), Vec<&Envelope>> = BTreeMap::new();
    for e in events {
        by_aggregate
            .entry((e.aggregate_type.as_str(), e.aggregate_id.as_str()))
            .or_default()
            .push(e);
    }
    let mut applied = 0;
    for ((aggregate_type, aggregate_id), mut delivered) in by_aggregate {
        // Redelivered messages can come after their successors, or twice in one batch.
        delivered.sort_by_key(|e| e.sequence);
        delivered.dedup_by_key(|e| e.sequence);
        let Some(last) = progress(projection, aggregate_type, aggregate_id, db).await? else {
            continue; // parked
        };
        let run = run_after(db, last, &delivered).await?;
        let Some(newest) = run.last().map(|e| e.sequence) else {
            continue;
        };
        projection.apply_run(&run, db).await?;
        sqlx::query(
            "update projection_progress set last_sequence = $4
             where projection = $1 and aggregate_type = $2 and aggregate_id = $3",
        )
        .bind(projection.name())
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(newest)
        .execute(&mut *db)
        .await?;
        applied += delivered.iter().filter(|e| e.sequence > last).count() as u64;
    }
    Ok(applied)
}

/// The last sequence the projection applied of an aggregate, its progress row locked (the
/// lock serializes projector processes working on the same aggregate); `None` when the
/// aggregate is parked.
async fn progress(
    projection: &dyn Projection,
    aggregate_type: &str,
    aggregate_id: &str,
    db: &mut PgConnection,
) -> Result<Option<i64>, sqlx::Error> {
    // One round trip: make sure the progress row exists, lock it, read it, and ask whether
    // the aggregate is parked. The no-op update is what takes the lock on an existing row.
    let (last, parked): (i64, bool) = sqlx::query_as(
        "insert into projection_progress as p (projection, aggregate_type, aggregate_id, last_sequence)
         values ($1, $2, $3, 0)
         on conflict (projection, aggregate_type, aggregate_id)
            do update set last_sequence = p.last_sequence
         returning last_sequence,
                   exists(select 1 from parked_events k
                          where k.projection = $1 and k.aggregate_type = $2 and k.aggregate_id = $3)",
    )
    .bind(projection.name())
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(&mut *db)
    .await?;
    Ok((!parked).then_some(last))
}

/// The events to apply of one aggregate after sequence `last`: the delivered ones (in
/// sequence order) not applied yet, each preceded by any missing ones from the events table.
async fn run_after(
    db: &mut PgConnection,
    last: i64,
    delivered: &[&Envelope],
) -> Result<Vec<Envelope>, sqlx::Error> {
    let mut run = Vec::with_capacity(delivered.len());
    let mut newest = last;
    for &event in delivered {
        if event.sequence <= newest {
            continue;
        }
        if event.sequence > newest + 1 {
            run.extend(events_between(db, event, newest, event.sequence).await?);
        }
        run.push(event.clone());
        newest = event.sequence;
    }
    Ok(run)
}

/// The events of `event`'s aggregate with `after < sequence < before`.
async fn events_between(
    db: &mut PgConnection,
    event: &Envelope,
    after: i64,
    before: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from events
         where aggregate_type = $1 and aggregate_id = $2 and sequence > $3 and sequence < $4
         order by sequence"
    );
    sqlx::query_as::<_, Envelope>(&sql)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(after)
        .bind(before)
        .fetch_all(db)
        .await
}

/// A projection fed by a JetStream consumer.
pub struct ProjectionHandler {
    pub projection: Arc<dyn Projection>,
    pub pool: PgPool,
}

/// The advisory lock a projection's batches hold shared and a replay's switch takes
/// exclusively.
pub fn swap_lock_key(projection: &str) -> i64 {
    marquee_nats::names::lock_key(&format!("marquee-projection:{projection}"))
}

#[async_trait]
impl Handler for ProjectionHandler {
    async fn apply(&self, events: &[Envelope]) -> Result<(), Failure> {
        let mut tx = self.pool.begin().await.map_err(failure)?;
        sqlx::query("select pg_advisory_xact_lock_shared($1)")
            .bind(swap_lock_key(self.projection.name()))
            .execute(&mut *tx)
            .await
            .map_err(failure)?;
        apply_batch(self.projection.as_ref(), events, &mut tx)
            .await
            .map_err(failure)?;
        tx.commit().await.map_err(failure)?;
        let now = chrono::Utc::now();
        let lag = metrics::histogram!("marquee_projection_lag_seconds", "projection" => self.projection.name());
        for event in events {
            lag.record(event.age_seconds(now));
        }
        metrics::counter!("marquee_projection_applied_total", "projection" => self.projection.name())
            .increment(events.len() as u64);
        Ok(())
    }

    async fn park(&self, event: &Envelope, error: &str) -> Result<(), String> {
        sqlx::query(
            "insert into parked_events
                 (projection, aggregate_type, aggregate_id, sequence, event_type, error)
             values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        )
        .bind(self.projection.name())
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(&event.event_type)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Classifies an error: the database out of reach is transient, anything else is not.
fn failure(e: impl Into<ProjectionError>) -> Failure {
    let e = e.into();
    let transient = matches!(
        &e,
        ProjectionError::Database(
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        )
    );
    Failure {
        message: e.to_string(),
        transient,
    }
}

/// Tries again every parked aggregate of a projection, applying its events from the events
/// table; unparks those that now apply. Returns how many were unparked.
pub async fn retry_parked(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<usize, ProjectionError> {
    let parked: Vec<(String, String)> = sqlx::query_as(
        "select aggregate_type, aggregate_id from parked_events where projection = $1",
    )
    .bind(projection.name())
    .fetch_all(pool)
    .await?;
    let mut unparked = 0;
    for (aggregate_type, aggregate_id) in parked {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "delete from parked_events
             where projection = $1 and aggregate_type = $2 and aggregate_id = $3",
        )
        .bind(projection.name())
        .bind(&aggregate_type)
        .bind(&aggregate_id)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "select {COLUMNS} from events where aggregate_type = $1 and aggregate_id = $2
             order by sequence"
        );
        let events = sqlx::query_as::<_, Envelope>(&sql)
            .bind(&aggregate_type)
            .bind(&aggregate_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut ok = true;
        for e in &events {
            if let Err(err) = apply_tracked(projection, e, &mut tx).await {
                tracing::warn!(projection = projection.name(), aggregate_id, error = %err, "parked aggregate still fails");
                ok = false;
                break;
            }
        }
        if ok {
            tx.commit().await?;
            unparked += 1;
        }
    }
    Ok(unparked)
}

/// Runs every projection's consumer until `shutdown`. Dropping the future stops them all (they
/// live in a `JoinSet`), as a crash would.
pub async fn run_all(
    pool: PgPool,
    client: async_nats::Client,
    ns: Namespace,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for projection in crate::all() {
        match retry_parked(&pool, projection.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                projection = projection.name(),
                unparked = n,
                "unparked aggregates"
            ),
            Err(e) => {
                tracing::warn!(projection = projection.name(), error = %e, "could not retry parked aggregates")
            }
        }
        let spec = Spec {
            name: projection.name().to_owned(),
            filter_subject: ns.aggregate_filter(projection.aggregate_type()),
        };
        let handler = Arc::new(ProjectionHandler {
            projection,
            pool: pool.clone(),
        });
        tasks.spawn(consumer::run(
            client.clone(),
            ns.clone(),
            spec,
            handler,
            shutdown.clone(),
        ));
    }
    // A parked aggregate may become applicable (a fixed deployment, a repaired row): try
    // them again every minute, not only at start.
    let (retry_pool, retry_stop) = (pool.clone(), shutdown.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                _ = retry_stop.cancelled() => return,
            }
            for projection in crate::all() {
                if let Ok(n @ 1..) = retry_parked(&retry_pool, projection.as_ref()).await {
                    tracing::info!(
                        projection = projection.name(),
                        unparked = n,
                        "unparked aggregates"
                    );
                }
            }
        }
    });
    while tasks.join_next().await.is_some() {}
}

/// How many (projection, aggregate) pairs have events stored that the projection has not
/// applied yet. Zero means every read model has caught up with the log.
pub async fn unapplied(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let projections = crate::all();
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let types: Vec<&str> = projections.iter().map(|p| p.aggregate_type()).collect();
    sqlx::query_scalar(
        "with latest as (
             select aggregate_type, aggregate_id, max(sequence) as last from events group by 1, 2
         ),
         wanted as (
             select p.name, l.aggregate_type, l.aggregate_id, l.last
             from latest l join unnest($1::text[], $2::text[]) as p(name, aggregate_type)
               using (aggregate_type)
         )
         select count(*) from wanted w
         left join projection_progress pp
           on pp.projection = w.name and pp.aggregate_type = w.aggregate_type
          and pp.aggregate_id = w.aggregate_id
         where coalesce(pp.last_sequence, 0) < w.last",
    )
    .bind(&names)
    .bind(&types)
    .fetch_one(pool)
    .await
}
