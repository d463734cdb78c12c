//! Lookup rows the command side derives from showtime events, written in the same transaction
//! as the events (see `migrations/*_booking_index.sql`): which showtime a reservation or ticket
//! belongs to, when each open hold is due to expire, which payments have no recorded outcome
//! yet and which refunds the card processor has still to pay.
//!
//! Which rows an event implies is decided here, once: [`Lookups::add`] for the common events
//! (their rows are written by the `record_lookups` SQL function, the only place they are, see
//! `migrations/*_record_lookups.sql`), [`record_one`] for the rare ones.

use crate::db::PgQuery;
use crate::reservation_cache::Owner;
use chrono::{DateTime, Utc};
use marquee_domain::showtime::ShowtimeEvent;
use marquee_domain::{Money, ReservationId, ShowtimeId, TicketId, UserId};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The showtime and customer of a reservation, from its lookup row.
pub async fn reservation_owner(
    pool: &PgPool,
    id: ReservationId,
) -> Result<Option<Owner>, sqlx::Error> {
    let row: Option<(Uuid, Uuid)> = sqlx::query_as(
        "select showtime_id, customer_id from reservation_index where reservation_id = $1",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(owner))
}

/// The showtime and customer of a ticket, from its lookup row.
pub async fn ticket_owner(pool: &PgPool, id: TicketId) -> Result<Option<Owner>, sqlx::Error> {
    let row: Option<(Uuid, Uuid)> =
        sqlx::query_as("select showtime_id, customer_id from ticket_index where ticket_id = $1")
            .bind(id.0)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(owner))
}

fn owner((showtime, customer): (Uuid, Uuid)) -> Owner {
    Owner {
        showtime: ShowtimeId(showtime),
        customer: UserId(customer),
    }
}

/// Updates the lookups for a batch of events of one showtime.
///
/// A hot showtime's batch holds hundreds of holds and releases; one statement per event made
/// the batch wait on hundreds of round trips before its commit. The common writes (new
/// reservations, tickets and timers, deleted timers, settled payments) are gathered and sent
/// in one statement; the rare ones (a payment starting or failing, a refund) first send what
/// was gathered, then run on their own, so every row ends as if the events had been applied
/// one by one, in order. (A batch of common events alone can go in one statement with
/// its events: see [`gather`] and [`Lookups::append_with`].)
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    showtime: ShowtimeId,
    events: &[ShowtimeEvent],
) -> Result<(), sqlx::Error> {
    let mut gathered = Lookups::default();
    for event in events {
        match gathered.add(event) {
            Step::Added => {}
            Step::SendFirst => {
                gathered.send(tx, showtime.0).await?;
                let added = gathered.add(event);
                debug_assert!(
                    matches!(added, Step::Added),
                    "nothing gathered is in its way"
                );
            }
            Step::Rare => {
                gathered.send(tx, showtime.0).await?;
                record_one(tx, showtime.0, event).await?;
            }
        }
    }
    gathered.send(tx, showtime.0).await
}

/// The lookup writes of `events` gathered per table, when the batch is made of common events
/// whose writes keep their order as inserts first, then deletes; `None` when it needs
/// [`record`]'s statement-by-statement way.
pub fn gather(events: &[ShowtimeEvent]) -> Option<Lookups> {
    let mut gathered = Lookups::default();
    for event in events {
        if !matches!(gathered.add(event), Step::Added) {
            return None;
        }
    }
    Some(gathered)
}

/// The common writes of a run of events, sent together: inserts first, then deletes, which
/// is their order within the run (a timer deleted before it is inserted again is sent apart).
#[derive(Default)]
pub struct Lookups {
    /// New holds: reservation, customer, expiry.
    reservations: Vec<(Uuid, Uuid, DateTime<Utc>)>,
    /// New tickets: ticket, reservation, customer.
    tickets: Vec<(Uuid, Uuid, Uuid)>,
    timers_deleted: Vec<Uuid>,
    settled: Vec<Uuid>,
}

/// What [`Lookups::add`] did with an event.
enum Step {
    Added,
    /// Its writes must follow what was gathered: send that first, then add it.
    SendFirst,
    /// It is written on its own ([`record_one`]), after what was gathered (which includes the
    /// payment it settles, if any).
    Rare,
}

impl Lookups {
    fn add(&mut self, event: &ShowtimeEvent) -> Step {
        match event {
            ShowtimeEvent::SeatsHeld(e) => {
                let reservation = e.reservation_id.0;
                if self.timers_deleted.contains(&reservation) {
                    // Its insert must come after that delete.
                    return Step::SendFirst;
                }
                self.reservations
                    .push((reservation, e.customer_id.0, e.expires_at));
            }
            ShowtimeEvent::HoldReleased { reservation_id, .. }
            | ShowtimeEvent::HoldExpired { reservation_id, .. } => {
                self.timers_deleted.push(reservation_id.0);
            }
            ShowtimeEvent::TicketsIssued(e) => {
                self.settled.push(e.payment_id.0);
                self.timers_deleted.push(e.reservation_id.0);
                self.tickets.extend(
                    e.tickets
                        .iter()
                        .map(|t| (t.ticket_id.0, e.reservation_id.0, e.customer_id.0)),
                );
            }
            ShowtimeEvent::ShowtimeScheduled { .. } | ShowtimeEvent::ShowtimeCancelled { .. } => {}
            ShowtimeEvent::PaymentFailed(e) => {
                // Settled with what was gathered; the rest is written on its own, after.
                self.settled.push(e.payment_id.0);
                return Step::Rare;
            }
            ShowtimeEvent::PaymentRefunded { payment_id, .. } => {
                self.settled.push(payment_id.0);
                return Step::Rare;
            }
            ShowtimeEvent::PaymentStarted(_) | ShowtimeEvent::TicketRefunded(_) => {
                return Step::Rare
            }
        }
        Step::Added
    }

    /// Binds these lookups as the next parameters of `query`, in the order of
    /// `append_showtime_batch`'s lookup arrays.
    pub fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        let (reservations, customers, expiries) = unzip3(self.reservations);
        let (tickets, ticket_reservations, ticket_customers) = unzip3(self.tickets);
        query
            .bind(reservations)
            .bind(customers)
            .bind(expiries)
            .bind(tickets)
            .bind(ticket_reservations)
            .bind(ticket_customers)
            .bind(self.timers_deleted)
            .bind(self.settled)
    }

    /// Writes what was gathered (through `record_lookups`, the one place the common lookup
    /// rows are written: see its migration) and starts gathering anew.
    async fn send(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        showtime: Uuid,
    ) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let mut columns = LookupColumns::default();
        columns.add(1, std::mem::take(self));
        let query = sqlx::query(
            "select record_lookups($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind([showtime.to_string()])
        .bind(Vec::<i32>::new());
        columns.bind(query).execute(&mut **tx).await?;
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.reservations.is_empty()
            && self.tickets.is_empty()
            && self.timers_deleted.is_empty()
            && self.settled.is_empty()
    }
}

/// The lookups of several showtimes' batches as the column arrays that
/// `append_showtime_batches` takes, each row with the (1-based) index of its batch.
#[derive(Default)]
pub struct LookupColumns {
    reservation_batches: Vec<i32>,
    reservations: Vec<Uuid>,
    customers: Vec<Uuid>,
    expiries: Vec<DateTime<Utc>>,
    ticket_batches: Vec<i32>,
    tickets: Vec<Uuid>,
    ticket_reservations: Vec<Uuid>,
    ticket_customers: Vec<Uuid>,
    timer_batches: Vec<i32>,
    timers_deleted: Vec<Uuid>,
    settled_batches: Vec<i32>,
    settled: Vec<Uuid>,
}

impl LookupColumns {
    /// Adds the lookups of batch number `batch`.
    pub fn add(&mut self, batch: i32, lookups: Lookups) {
        for (r, c, e) in lookups.reservations {
            self.reservation_batches.push(batch);
            self.reservations.push(r);
            self.customers.push(c);
            self.expiries.push(e);
        }
        for (t, r, c) in lookups.tickets {
            self.ticket_batches.push(batch);
            self.tickets.push(t);
            self.ticket_reservations.push(r);
            self.ticket_customers.push(c);
        }
        self.timer_batches
            .extend(std::iter::repeat_n(batch, lookups.timers_deleted.len()));
        self.timers_deleted.extend(lookups.timers_deleted);
        self.settled_batches
            .extend(std::iter::repeat_n(batch, lookups.settled.len()));
        self.settled.extend(lookups.settled);
    }

    /// Binds the twelve arrays as the next parameters of `query`.
    pub fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.reservation_batches)
            .bind(self.reservations)
            .bind(self.customers)
            .bind(self.expiries)
            .bind(self.ticket_batches)
            .bind(self.tickets)
            .bind(self.ticket_reservations)
            .bind(self.ticket_customers)
            .bind(self.timer_batches)
            .bind(self.timers_deleted)
            .bind(self.settled_batches)
            .bind(self.settled)
    }
}

/// Rows of three columns as three column arrays, for `unnest`.
fn unzip3<A, B, C>(rows: impl IntoIterator<Item = (A, B, C)>) -> (Vec<A>, Vec<B>, Vec<C>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (a, b, c) in rows {
        columns.0.push(a);
        columns.1.push(b);
        columns.2.push(c);
    }
    columns
}

/// The rare events, one statement at a time.
async fn record_one(
    tx: &mut Transaction<'_, Postgres>,
    showtime: Uuid,
    event: &ShowtimeEvent,
) -> Result<(), sqlx::Error> {
    match event {
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
        ShowtimeEvent::PaymentRefunded {
            payment_id,
            amount,
            refunded_at,
            ..
        } => {
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
        common => unreachable!("gathered by `record`: {common:?}"),
    }
    Ok(())
}

/// Money the log says goes back, queued for the processor (paid by `marquee_payments::reconcile`).
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
