//! Reconciliation with the card processor: nothing charged goes unrecorded, nothing recorded
//! as refunded goes unpaid.
//!
//! Charging a card and recording the outcome cannot happen in one transaction. A payment is
//! therefore recorded as started (`PaymentStarted`, with a row in `payments_in_flight`)
//! before the card is charged, and its outcome after. When the process dies in between, or
//! the processor does not answer within `MARQUEE_PAYMENT_TIMEOUT_MS`, the row stays; once no
//! charge for it can still be in flight, this pass asks the processor what happened and
//! records it: tickets (or a refund, if the hold is gone by then) for a charge, a failed
//! payment otherwise. Refunds the log records (`PaymentRefunded`, `TicketRefunded`) wait in
//! `refunds_due`, written with the events, until the processor has paid them; failures are
//! retried with backoff. The processor deduplicates by Marquee's ids, so a retry never moves
//! money twice. Several processes may run this pass: the aggregate refuses to settle a
//! payment twice, and a refund id is paid once.

use crate::event_store::{now, Actor, Metadata};
use crate::payment::{ChargeStatus, PaymentError, PaymentProvider};
use crate::writer::{WriteError, Writers};
use marquee_domain::showtime::{
    ConfirmPayment, FailPayment, NewTicket, PaymentState, ShowtimeCommand, ShowtimeEvent,
    MAX_SEATS_PER_HOLD,
};
use marquee_domain::{Currency, Money, PaymentId, ReservationId, ShowtimeId, TicketId};
use rand::Rng;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the pass runs.
pub const TICK: Duration = Duration::from_secs(1);
/// A charge's answer may arrive this long after its timeout before the reconciler asks.
const GRACE: Duration = Duration::from_secs(2);
/// Most payments and refunds handled per pass.
const BATCH: i64 = 100;

/// The longest a payment started now can stay unsettled when its charge gets no answer within
/// `timeout`: the timeout, the grace, and one pass.
pub fn settled_within(timeout: Duration) -> Duration {
    timeout + GRACE + TICK
}

/// Runs until `shutdown` fires. `timeout` is the charge timeout of the engine's processes.
pub async fn run(
    pool: PgPool,
    writers: Writers,
    payments: Arc<dyn PaymentProvider>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = settle_stale(&pool, &writers, payments.as_ref(), timeout).await {
            tracing::warn!(error = %e, "payment reconciliation pass failed; retrying");
        }
        if let Err(e) = pay_refunds(&pool, payments.as_ref()).await {
            tracing::warn!(error = %e, "refund pass failed; retrying");
        }
    }
}

/// Records the outcome of every payment started more than `timeout` (plus a grace) ago and
/// still open; returns how many it settled.
pub async fn settle_stale(
    pool: &PgPool,
    writers: &Writers,
    payments: &dyn PaymentProvider,
    timeout: Duration,
) -> Result<usize, sqlx::Error> {
    let before = now() - (timeout + GRACE);
    let stale: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "select payment_id, showtime_id, reservation_id from payments_in_flight
         where started_at <= $1 order by started_at limit $2",
    )
    .bind(before)
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    let mut settled = 0;
    for (payment, showtime, reservation) in stale {
        let (payment, showtime, reservation) = (
            PaymentId(payment),
            ShowtimeId(showtime),
            ReservationId(reservation),
        );
        let status = match payments.status(payment).await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(%payment, error = %e, "cannot ask the processor about a payment");
                continue;
            }
        };
        let meta = Metadata::engine(Actor::System);
        let recorded = match &status {
            ChargeStatus::Charged => record_charged(writers, showtime, reservation, payment, meta)
                .await
                .map(|_| ()),
            ChargeStatus::Declined(reason) => {
                record_failed(writers, showtime, reservation, payment, reason, true, meta).await
            }
            ChargeStatus::Unknown => {
                record_failed(
                    writers,
                    showtime,
                    reservation,
                    payment,
                    "processor_unavailable",
                    true,
                    meta,
                )
                .await
            }
        };
        match recorded {
            Ok(()) => {
                settled += 1;
                tracing::info!(%payment, %reservation, ?status, "payment reconciled");
                metrics::counter!("marquee_payments_reconciled_total").increment(1);
            }
            Err(e) => tracing::warn!(%payment, error = %e, "could not record a reconciled payment"),
        }
        // Settled now or before (the aggregate refused a second outcome): either way the log
        // has the outcome once the aggregate has none left to record.
        if still_open(writers, showtime, payment).await == Some(false) {
            sqlx::query("delete from payments_in_flight where payment_id = $1")
                .bind(payment.0)
                .execute(pool)
                .await?;
        }
    }
    Ok(settled)
}

/// Whether the showtime still waits for the payment's outcome; `None` if it cannot tell.
async fn still_open(writers: &Writers, showtime: ShowtimeId, payment: PaymentId) -> Option<bool> {
    let shared = writers.state(showtime).await.ok()??;
    let committed = shared.read().expect("lock poisoned");
    let open = committed
        .showtime
        .payments
        .get(&payment)
        .is_some_and(|p| p.state == PaymentState::Started);
    Some(open)
}

/// Records a successful charge: tickets if the hold still waits for this payment, a refund
/// otherwise. Returns the events recorded.
pub async fn record_charged(
    writers: &Writers,
    showtime: ShowtimeId,
    reservation: ReservationId,
    payment: PaymentId,
    meta: Metadata,
) -> Result<Vec<ShowtimeEvent>, WriteError> {
    // Ticket ids and codes are not the aggregate's to choose: minted here, one per seat.
    let seats = match writers.state(showtime).await? {
        Some(shared) => {
            let committed = shared.read().expect("lock poisoned");
            let hold = committed.showtime.holds.get(&reservation);
            hold.map_or(0, |h| h.seats.len())
        }
        None => 0,
    };
    let tickets = (0..seats.min(MAX_SEATS_PER_HOLD))
        .map(|_| NewTicket {
            id: TicketId(Uuid::now_v7()),
            code: ticket_code(),
        })
        .collect();
    let command = ShowtimeCommand::ConfirmPayment(ConfirmPayment {
        reservation_id: reservation,
        payment_id: payment,
        tickets,
        now: now(),
    });
    writers.settle(showtime, command, meta).await
}

/// Records a payment that did not go through.
pub async fn record_failed(
    writers: &Writers,
    showtime: ShowtimeId,
    reservation: ReservationId,
    payment: PaymentId,
    reason: &str,
    retryable: bool,
    meta: Metadata,
) -> Result<(), WriteError> {
    let command = ShowtimeCommand::FailPayment(FailPayment {
        reservation_id: reservation,
        payment_id: payment,
        reason: reason.to_owned(),
        retryable,
        now: now(),
    });
    writers.settle(showtime, command, meta).await.map(|_| ())
}

/// A ticket's code, what the QR code at the door encodes: ten characters without look-alikes
/// (no 0/O, 1/I).
pub fn ticket_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Pays the refunds that are due; returns how many the processor confirmed.
pub async fn pay_refunds(
    pool: &PgPool,
    payments: &dyn PaymentProvider,
) -> Result<usize, sqlx::Error> {
    let due: Vec<(String, Uuid, i64, String, i32)> = sqlx::query_as(
        "select refund_id, payment_id, amount, currency, attempts from refunds_due
         where due_at <= now() order by due_at limit $1",
    )
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    let mut paid = 0;
    for (refund, payment, amount, currency, attempts) in due {
        let money = match Currency::parse(&currency).and_then(|c| Money::new(amount, c)) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(refund, error = %e, "a refund due has an impossible amount");
                continue;
            }
        };
        match payments.refund(&refund, PaymentId(payment), &money).await {
            Ok(()) => {
                sqlx::query("delete from refunds_due where refund_id = $1")
                    .bind(&refund)
                    .execute(pool)
                    .await?;
                paid += 1;
                metrics::counter!("marquee_refunds_paid_total").increment(1);
            }
            Err(e) => {
                let wait = backoff(attempts);
                tracing::warn!(refund, %payment, attempts = attempts + 1, retry_in_seconds = wait.as_secs(), error = %e, "the processor did not take a refund; retrying later");
                metrics::counter!("marquee_refund_failures_total").increment(1);
                sqlx::query(
                    "update refunds_due set attempts = attempts + 1, last_error = $2,
                            due_at = now() + $3 * interval '1 second'
                     where refund_id = $1",
                )
                .bind(&refund)
                .bind(refund_error(&e))
                .bind(wait.as_secs() as f64)
                .execute(pool)
                .await?;
            }
        }
    }
    Ok(paid)
}

/// Doubling from 2 s, at most an hour: a processor outage is retried through, a refund the
/// processor refuses stays visible (`refunds_due.last_error`) without hammering it.
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs((2u64 << attempts.clamp(0, 11)).min(3600))
}

fn refund_error(e: &PaymentError) -> String {
    e.to_string().chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_retries_back_off_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(64));
        assert_eq!(backoff(30), Duration::from_secs(3600));
    }
}
