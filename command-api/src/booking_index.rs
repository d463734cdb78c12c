//! Lookup rows the command side derives from showtime events, written in the same transaction
//! as the events (see `migrations/*_booking_index.sql`): which showtime a reservation or ticket
//! belongs to, when each open hold is due to expire, which payments have no recorded outcome
//! yet and which refunds the card processor has still to pay.

use chrono::{DateTime, Utc};
use marquee_domain::showtime::ShowtimeEvent;
use marquee_domain::{Money, ShowtimeId};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Updates the lookups for a batch of events of one showtime.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    showtime: ShowtimeId,
    events: &[ShowtimeEvent],
) -> Result<(), sqlx::Error> {
    for event in events {
        record_one(tx, showtime.0, event).await?;
    }
    Ok(())
}

async fn record_one(
    tx: &mut Transaction<'_, Postgres>,
    showtime: Uuid,
    event: &ShowtimeEvent,
) -> Result<(), sqlx::Error> {
    match event {
        ShowtimeEvent::SeatsHeld(e) => {
            sqlx::query(
                "insert into reservation_index (reservation_id, showtime_id, customer_id)
                 values ($1, $2, $3) on conflict do nothing",
            )
            .bind(e.reservation_id.0)
            .bind(showtime)
            .bind(e.customer_id.0)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "insert into hold_timers (reservation_id, showtime_id, expires_at, due_at)
                 values ($1, $2, $3, $3) on conflict do nothing",
            )
            .bind(e.reservation_id.0)
            .bind(showtime)
            .bind(e.expires_at)
            .execute(&mut **tx)
            .await?;
        }
        ShowtimeEvent::PaymentStarted(e) => {
            sqlx::query("update hold_timers set due_at = $2 where reservation_id = $1")
                .bind(e.reservation_id.0)
                .bind(e.pinned_until)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "insert into payments_in_flight
                     (payment_id, showtime_id, reservation_id, started_at, pinned_until)
                 values ($1, $2, $3, $4, $5) on conflict do nothing",
            )
            .bind(e.payment_id.0)
            .bind(showtime)
            .bind(e.reservation_id.0)
            .bind(e.started_at)
            .bind(e.pinned_until)
            .execute(&mut **tx)
            .await?;
        }
        ShowtimeEvent::PaymentFailed(e) => {
            settled(tx, e.payment_id.0).await?;
            // Back to the hold's own expiry, never past the pin (the aggregate's rule too).
            sqlx::query(
                "update hold_timers
                 set expires_at = least(expires_at, due_at), due_at = least(expires_at, due_at)
                 where reservation_id = $1",
            )
            .bind(e.reservation_id.0)
            .execute(&mut **tx)
            .await?;
        }
        ShowtimeEvent::HoldReleased { reservation_id, .. }
        | ShowtimeEvent::HoldExpired { reservation_id, .. } => {
            delete_timer(tx, reservation_id.0).await?;
        }
        ShowtimeEvent::TicketsIssued(e) => {
            settled(tx, e.payment_id.0).await?;
            delete_timer(tx, e.reservation_id.0).await?;
            for t in &e.tickets {
                sqlx::query(
                    "insert into ticket_index (ticket_id, showtime_id, reservation_id, customer_id)
                     values ($1, $2, $3, $4) on conflict do nothing",
                )
                .bind(t.ticket_id.0)
                .bind(showtime)
                .bind(e.reservation_id.0)
                .bind(e.customer_id.0)
                .execute(&mut **tx)
                .await?;
            }
        }
        ShowtimeEvent::PaymentRefunded {
            payment_id,
            amount,
            refunded_at,
            ..
        } => {
            settled(tx, payment_id.0).await?;
            refund_due(
                tx,
                &payment_id.to_string(),
                payment_id.0,
                amount,
                *refunded_at,
            )
            .await?;
        }
        ShowtimeEvent::TicketRefunded(e) => {
            let refund = format!("{}/{}", e.payment_id, e.ticket_id);
            refund_due(tx, &refund, e.payment_id.0, &e.amount, e.refunded_at).await?;
        }
        ShowtimeEvent::ShowtimeScheduled { .. } | ShowtimeEvent::ShowtimeCancelled { .. } => {}
    }
    Ok(())
}

async fn delete_timer(
    tx: &mut Transaction<'_, Postgres>,
    reservation: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from hold_timers where reservation_id = $1")
        .bind(reservation)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The payment's outcome is in the log: nothing left to reconcile.
async fn settled(tx: &mut Transaction<'_, Postgres>, payment: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from payments_in_flight where payment_id = $1")
        .bind(payment)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Money the log says goes back, queued for the processor (see `crate::reconcile`).
async fn refund_due(
    tx: &mut Transaction<'_, Postgres>,
    refund: &str,
    payment: Uuid,
    amount: &Money,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into refunds_due (refund_id, payment_id, amount, currency, recorded_at, due_at)
         values ($1, $2, $3, $4, $5, now()) on conflict do nothing",
    )
    .bind(refund)
    .bind(payment)
    .bind(amount.amount)
    .bind(amount.currency.as_str())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
