//! Reconciliation with the card processor: nothing charged goes unrecorded, nothing recorded
//! as refunded goes unpaid.
//!
//! Charging a card and recording the outcome cannot happen in one transaction. A payment is
//! therefore recorded as started (`PaymentStarted`, with a row in `payments_in_flight`)
//! before the card is charged, and its outcome after. When the process dies in between, or
//! the processor does not answer within `MARQUEE_PAYMENT_TIMEOUT_MS`, the row stays. Just
//! before charging, the sender writes its own deadline on the row
//! ([`due::mark_sending`]); once it has passed (a grace included), no process waits for the
//! answer any more and this pass asks
//! the processor what happened and records it: tickets (or a refund, if the hold is gone by
//! then) for a charge, a failed payment otherwise. A charge the processor has not seen is
//! voided first, so that none can arrive after the failure is recorded; and should a success
//! arrive for a payment recorded as failed all the same, the aggregate records its refund.
//! Each call to the processor is bounded, and a row it keeps failing on backs off alone.
//! Refunds the log records (`PaymentRefunded`, `TicketRefunded`) wait in
//! `refunds_due`, written with the events, until the processor has paid them; failures are
//! retried with backoff. The processor deduplicates by Marquee's ids, so a retry never moves
//! money twice. Several processes may run this pass: the aggregate refuses to settle a
//! payment twice, and a refund id is paid once.

use crate::processor::{ChargeStatus, PaymentError, PaymentProvider};
use marquee_domain::showtime::{
    ConfirmPayment, FailPayment, NewTicket, PaymentState, ShowtimeCommand, ShowtimeEvent,
    MAX_SEATS_PER_HOLD,
};
use marquee_domain::{Currency, Money, PaymentId, ReservationId, ShowtimeId, TicketId};
use marquee_event_store::due::{self, DuePayment, DueRefund};
use marquee_event_store::event_store::now;
use marquee_event_store::metadata::{Actor, Metadata};
use marquee_event_store::writer::{WriteError, Writers};
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
/// The longest one call to the processor may take before the pass moves on to the next row.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Records the outcome of every payment that no process can still be waiting for: one whose
/// sender's deadline (see [`due::mark_sending`]) passed more than a grace ago, or one never
/// sent and recorded more than `timeout` (plus the grace) ago. Returns how many it settled. A
/// payment the processor cannot be asked about now waits its own back-off; the others go on.
pub async fn settle_stale(
    pool: &PgPool,
    writers: &Writers,
    payments: &dyn PaymentProvider,
    timeout: Duration,
) -> Result<usize, sqlx::Error> {
    let mut settled = 0;
    for due in due::payments(pool, timeout, GRACE, BATCH).await? {
        if !due.sent && !due::claim_unsent(pool, due.payment_id).await? {
            continue; // its sender wrote a deadline a moment ago: it is in flight after all
        }
        let payment = PaymentId(due.payment_id);
        match settle(writers, payments, &due).await {
            Ok(status) => {
                settled += 1;
                tracing::info!(%payment, reservation = %due.reservation_id, ?status, "payment reconciled");
                metrics::counter!("marquee_payments_reconciled_total").increment(1);
            }
            Err(e) => {
                tracing::warn!(%payment, attempts = due.attempts + 1, error = %e, "cannot reconcile a payment yet; retrying later");
                due::retry_payment_later(pool, due.payment_id, &e, backoff(due.attempts)).await?;
                continue;
            }
        }
        // Settled now or before (the aggregate refused a second outcome): either way the log
        // has the outcome once the aggregate has none left to record.
        if still_open(writers, ShowtimeId(due.showtime_id), payment).await == Some(false) {
            due::forget_payment(pool, payment).await?;
        }
    }
    Ok(settled)
}

/// Asks the processor what became of the payment, voids it if the charge never arrived, and
/// records the outcome.
async fn settle(
    writers: &Writers,
    payments: &dyn PaymentProvider,
    due: &DuePayment,
) -> Result<ChargeStatus, String> {
    let payment = PaymentId(due.payment_id);
    let (showtime, reservation) = (
        ShowtimeId(due.showtime_id),
        ReservationId(due.reservation_id),
    );
    let mut status = ask(payments.status(payment)).await?;
    if status == ChargeStatus::Unknown {
        // A charge may still be on its way: after the void none can arrive.
        status = ask(payments.void(payment)).await?;
    }
    let meta = Metadata::engine(Actor::System);
    let recorded = match &status {
        ChargeStatus::Charged => record_charged(writers, showtime, reservation, payment, meta)
            .await
            .map(|_| ()),
        ChargeStatus::Declined(reason) => {
            record_failed(writers, showtime, reservation, payment, reason, true, meta).await
        }
        ChargeStatus::Voided => {
            let reason = "processor_unavailable";
            record_failed(writers, showtime, reservation, payment, reason, true, meta).await
        }
        ChargeStatus::Unknown => return Err("the processor did not take the void".into()),
    };
    recorded.map_err(|e| e.to_string())?;
    Ok(status)
}

/// One call to the processor, bounded: a processor that hangs must not stall the pass.
async fn ask<T>(
    call: impl std::future::Future<Output = Result<T, PaymentError>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer from the processor within {} s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// Whether the showtime still waits for the payment's outcome; `None` if it cannot tell.
async fn still_open(writers: &Writers, showtime: ShowtimeId, payment: PaymentId) -> Option<bool> {
    // Read only: a showtime that no longer waits on anything needs no writer for this.
    let shared = writers.read(showtime).await.ok()??;
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
    let mut paid = 0;
    for DueRefund {
        refund_id: refund,
        payment_id: payment,
        amount,
        currency,
        attempts,
    } in due::refunds(pool, BATCH).await?
    {
        let money = match Currency::parse(&currency).and_then(|c| Money::new(amount, c)) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(refund, error = %e, "a refund due has an impossible amount");
                continue;
            }
        };
        match ask(payments.refund(&refund, PaymentId(payment), &money)).await {
            Ok(()) => {
                due::refund_paid(pool, &refund).await?;
                paid += 1;
                metrics::counter!("marquee_refunds_paid_total").increment(1);
            }
            Err(e) => {
                let wait = backoff(attempts);
                tracing::warn!(refund, %payment, attempts = attempts + 1, retry_in_seconds = wait.as_secs(), error = %e, "the processor did not take a refund; retrying later");
                metrics::counter!("marquee_refund_failures_total").increment(1);
                due::retry_refund_later(pool, &refund, &e, wait).await?;
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
