//! The work lists of the background workers, kept with the events (see [`crate::booking_index`]):
//! holds due to expire (`hold_timers`), payments with no recorded outcome
//! (`payments_in_flight`) and refunds the card processor has still to pay (`refunds_due`).
//! The expiry timer and the payment reconciler read them and mark what they did here; the
//! rows themselves come and go with the events that imply them.

use chrono::{DateTime, Utc};
use marquee_domain::{PaymentId, ReservationId, ShowtimeId};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A hold whose time has run out (or whose pin has).
pub struct DueHold {
    pub reservation: ReservationId,
    pub showtime: ShowtimeId,
}

/// Up to `limit` holds due at `now`, the longest due first.
pub async fn holds(
    pool: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueHold>, sqlx::Error> {
    let due: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select reservation_id, showtime_id from hold_timers where due_at <= $1
         order by due_at limit $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(due
        .into_iter()
        .map(|(reservation, showtime)| DueHold {
            reservation: ReservationId(reservation),
            showtime: ShowtimeId(showtime),
        })
        .collect())
}

/// Drops a hold's timer that has nothing left to expire.
pub async fn forget_hold(pool: &PgPool, reservation: ReservationId) -> Result<(), sqlx::Error> {
    sqlx::query("delete from hold_timers where reservation_id = $1")
        .bind(reservation.0)
        .execute(pool)
        .await?;
    Ok(())
}

/// A payment in flight whose outcome may be recorded.
#[derive(sqlx::FromRow)]
pub struct DuePayment {
    pub payment_id: Uuid,
    pub showtime_id: Uuid,
    pub reservation_id: Uuid,
    /// Whether a process wrote a deadline before charging (or a pass claimed it).
    pub sent: bool,
    pub attempts: i32,
}

/// Up to `limit` payments no process can still be waiting for: sent, with its sender's
/// deadline more than `grace` ago; or never sent and recorded more than `timeout` plus
/// `grace` ago. A payment that is backing off waits for its retry time.
pub async fn payments(
    pool: &PgPool,
    timeout: Duration,
    grace: Duration,
    limit: i64,
) -> Result<Vec<DuePayment>, sqlx::Error> {
    // The database's clock throughout: deadlines are written with it too.
    sqlx::query_as(
        "select payment_id, showtime_id, reservation_id, charge_deadline is not null as sent,
                attempts
         from payments_in_flight
         where coalesce(charge_deadline, recorded_at + $1 * interval '1 millisecond')
                   + $2 * interval '1 millisecond' <= now()
           and (retry_at is null or retry_at <= now())
         order by retry_at nulls first, recorded_at limit $3",
    )
    .bind(timeout.as_millis() as f64)
    .bind(grace.as_millis() as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Claims a payment never sent, so that a sender arriving late does not charge it (see
/// [`mark_sending`]). False when the sender got there first.
pub async fn claim_unsent(pool: &PgPool, payment: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update payments_in_flight set charge_deadline = now()
         where payment_id = $1 and charge_deadline is null",
    )
    .bind(payment)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Called just before a charge is sent: writes how long its sender waits for the answer, so
/// no pass settles it meanwhile, whatever its own timeout. False when a pass already claimed
/// the payment as never sent: then it must not be charged.
pub async fn mark_sending(
    pool: &PgPool,
    payment: PaymentId,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update payments_in_flight set charge_deadline = now() + $2 * interval '1 millisecond'
         where payment_id = $1 and charge_deadline is null",
    )
    .bind(payment.0)
    .bind(timeout.as_millis() as f64)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes a failed attempt at a payment's outcome; it is due again in `wait`.
pub async fn retry_payment_later(
    pool: &PgPool,
    payment: Uuid,
    error: &str,
    wait: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update payments_in_flight set attempts = attempts + 1, last_error = $2,
                retry_at = now() + $3 * interval '1 second'
         where payment_id = $1",
    )
    .bind(payment)
    .bind(error.chars().take(500).collect::<String>())
    .bind(wait.as_secs() as f64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Drops a payment whose outcome the log has: nothing left to reconcile.
pub async fn forget_payment(pool: &PgPool, payment: PaymentId) -> Result<(), sqlx::Error> {
    sqlx::query("delete from payments_in_flight where payment_id = $1")
        .bind(payment.0)
        .execute(pool)
        .await?;
    Ok(())
}

/// A refund the log records and the processor has not confirmed yet.
#[derive(sqlx::FromRow)]
pub struct DueRefund {
    /// Marquee's id of the refund, by which the processor deduplicates.
    pub refund_id: String,
    pub payment_id: Uuid,
    /// In the currency's minor unit.
    pub amount: i64,
    pub currency: String,
    pub attempts: i32,
}

/// Up to `limit` refunds due now, the longest due first.
pub async fn refunds(pool: &PgPool, limit: i64) -> Result<Vec<DueRefund>, sqlx::Error> {
    sqlx::query_as(
        "select refund_id, payment_id, amount, currency, attempts from refunds_due
         where due_at <= now() order by due_at limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Drops a refund the processor has confirmed.
pub async fn refund_paid(pool: &PgPool, refund: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from refunds_due where refund_id = $1")
        .bind(refund)
        .execute(pool)
        .await?;
    Ok(())
}

/// Notes a refund the processor did not take; it is due again in `wait`.
pub async fn retry_refund_later(
    pool: &PgPool,
    refund: &str,
    error: &str,
    wait: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update refunds_due set attempts = attempts + 1, last_error = $2,
                due_at = now() + $3 * interval '1 second'
         where refund_id = $1",
    )
    .bind(refund)
    .bind(error.chars().take(500).collect::<String>())
    .bind(wait.as_secs() as f64)
    .execute(pool)
    .await?;
    Ok(())
}
