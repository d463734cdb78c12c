//! The hold-expiry timer: records `HoldExpired` for holds whose time has run out.
//!
//! Seats of an expired hold are free the instant it expires whatever the timer does (the
//! aggregate decides by time); the timer only makes the expiry visible in the history and read
//! models. It reads its work list from `hold_timers`, which the writers keep in step with the
//! events. Several processes may run it: an expiry recorded twice is refused by the aggregate.

use marquee_domain::showtime::{ExpireHold, ShowtimeCommand, ShowtimeError};
use marquee_event_store::due::{self, DueHold};
use marquee_event_store::event_store::now;
use marquee_event_store::metadata::{Actor, Metadata};
use marquee_event_store::writer::{WriteError, Writers};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the timer looks for due holds.
pub const TICK: Duration = Duration::from_millis(500);
/// Most expiries handled per tick.
const BATCH: i64 = 500;

/// Runs until `shutdown` fires.
pub async fn run(pool: PgPool, writers: Writers, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purged_at = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = expire_due(&pool, &writers).await {
            tracing::warn!(error = %e, "hold expiry pass failed; retrying");
        }
        if purged_at.elapsed() > Duration::from_secs(600) {
            purged_at = std::time::Instant::now();
            if let Err(e) = marquee_api::idempotency::purge_expired(&pool).await {
                tracing::warn!(error = %e, "purging old idempotency keys failed");
            }
        }
    }
}

/// Expires every hold that is due now; returns how many it recorded.
pub async fn expire_due(pool: &PgPool, writers: &Writers) -> Result<usize, sqlx::Error> {
    let mut expired = 0;
    for DueHold {
        reservation,
        showtime,
    } in due::holds(pool, now(), BATCH).await?
    {
        let command = ShowtimeCommand::ExpireHold(ExpireHold {
            reservation_id: reservation,
            now: now(),
        });
        let meta = Metadata::engine(Actor::Timer);
        match writers.execute(showtime, command, meta).await {
            Ok(events) if !events.is_empty() => expired += 1,
            // Nothing to record, or the hold is unknown: the row is stale, drop it.
            Ok(_)
            | Err(WriteError::Rejected(
                ShowtimeError::ReservationNotFound | ShowtimeError::NotFound,
            )) => due::forget_hold(pool, reservation).await?,
            Err(WriteError::Rejected(ShowtimeError::NotExpiredYet)) => {}
            Err(e) => tracing::warn!(%reservation, error = %e, "could not record an expiry"),
        }
    }
    if expired > 0 {
        tracing::debug!(expired, "holds expired");
    }
    Ok(expired)
}
