//! N2, the conventional SQL way: one row per seat, locked with `SELECT ... FOR UPDATE` in one
//! transaction per command.
//!
//! A hold locks the requested seat rows and the customer's own held rows (an earlier unpaid
//! hold gives way to a new one, as in the engine), checks each requested seat is free or its
//! hold has run out, and updates them. Rows are always locked in label order, so two commands
//! on overlapping seats queue behind each other instead of deadlocking. The domain events each
//! decision amounts to are inserted in the same transaction into `baseline_events`.
//!
//! The auditor reads that history ordered by decision time, not by insertion: a command takes
//! its clock reading after its row locks are granted, so commands touching the same seat are
//! ordered by time exactly as the locks ordered them, while commands on other seats may commit
//! in any order.

use super::{labels, tickets_for, Held, SeatStore, HOLD_FOR, PIN_FOR};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_api::error::ApiError;
use marquee_domain::showtime::{
    IssuedTicket, PaymentStarted, ReleaseReason, SeatsHeld, ShowtimeEvent, TicketsIssued,
};
use marquee_domain::{Money, PaymentId, ReservationId, SeatLabel, ShowtimeId, UserId};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// The baseline's own tables, in the run's fresh database.
const SCHEMA: &str = "
-- one row per seat; status is free, held or sold
create table baseline_seats (
    showtime_id uuid not null,
    label text not null,
    price bigint not null,
    status text not null default 'free',
    reservation_id uuid,
    customer_id uuid,
    expires_at timestamptz,
    primary key (showtime_id, label)
);
create index baseline_seats_by_reservation on baseline_seats (reservation_id);
-- finds a customer's current hold, which a new hold replaces
create index baseline_seats_held_by_customer on baseline_seats (customer_id) where status = 'held';
create table baseline_reservations (
    id uuid primary key,
    showtime_id uuid not null,
    customer_id uuid not null,
    seats text[] not null
);
-- append-only history for the auditor, written in the deciding transaction
create table baseline_events (
    position bigserial primary key,
    showtime_id uuid not null,
    at timestamptz not null,
    payload jsonb not null
);
create index baseline_events_by_showtime on baseline_events (showtime_id, at, position);
";

/// Connections of the baseline's pool: as many as the engine's.
const POOL_SIZE: u32 = 16;
/// Attempts of a command that lost a deadlock (label order should prevent them).
const ATTEMPTS: usize = 3;

/// N2's seat store.
pub struct SqlStore {
    pool: PgPool,
    currency: marquee_domain::Currency,
}

/// One locked seat row.
#[derive(sqlx::FromRow)]
struct SeatRow {
    label: String,
    price: i64,
    status: String,
    reservation_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    expires_at: Option<DateTime<Utc>>,
}

impl SeatRow {
    /// Whether the row keeps its seat from others at `now`.
    fn is_taken(&self, now: DateTime<Utc>) -> bool {
        self.status == "sold" || (self.status == "held" && self.expires_at.is_some_and(|e| now < e))
    }
}

/// What a transaction decided: an answer for the caller, or a refusal (rolled back).
type Decided<T> = Result<Result<T, ApiError>, sqlx::Error>;

impl SqlStore {
    /// Creates the baseline's tables in `database_url` and opens its own pool.
    pub async fn create(database_url: &str) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            // Fail fast like the engine: a request waiting this long is better shed.
            .acquire_timeout(Duration::from_secs(5))
            .connect(database_url)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self {
            pool,
            currency: marquee_domain::Currency::parse("USD")?,
        })
    }

    /// Runs one attempt of a command again while it loses deadlocks.
    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Decided<T>>,
    {
        for tries in 1.. {
            match attempt().await {
                Ok(answer) => return answer,
                Err(e) if is_deadlock(&e) && tries < ATTEMPTS => continue,
                Err(e) => return Err(db_error(e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    async fn try_hold(
        &self,
        showtime: ShowtimeId,
        customer: UserId,
        seats: &[SeatLabel],
    ) -> Decided<Held> {
        let mut tx = self.pool.begin().await?;
        let wanted = labels(seats);
        let rows = Self::lock_for_hold(&mut tx, showtime, customer, &wanted).await?;
        let now = Utc::now();
        let replaced = rows
            .iter()
            .find(|r| r.customer_id == Some(customer.0) && r.is_taken(now) && r.status == "held")
            .and_then(|r| r.reservation_id);
        let requested = match free_to_hold(&rows, &wanted, replaced, now) {
            Ok(requested) => requested,
            Err(refused) => return Ok(Err(refused)),
        };
        let total = requested.iter().map(|r| r.price).sum::<i64>();
        let held = Held {
            reservation_id: ReservationId(Uuid::now_v7()),
            seats: seats.to_vec(),
            total: Money::new(total, self.currency.clone()).expect("stored prices are valid"),
            held_at: now,
            expires_at: now + HOLD_FOR,
        };
        let mut events = Vec::with_capacity(2);
        if let Some(old) = replaced {
            free_seats(&mut tx, showtime, old).await?;
            events.push(ShowtimeEvent::HoldReleased {
                reservation_id: ReservationId(old),
                reason: ReleaseReason::Replaced,
                released_at: now,
            });
        }
        take_seats(&mut tx, showtime, customer, &held, &wanted).await?;
        events.push(seats_held(&held, customer));
        record(&mut tx, showtime, &events).await?;
        tx.commit().await?;
        Ok(Ok(held))
    }

    /// Locks the requested seat rows and the customer's own held ones, in label order.
    async fn lock_for_hold(
        tx: &mut Transaction<'_, Postgres>,
        showtime: ShowtimeId,
        customer: UserId,
        wanted: &[String],
    ) -> Result<Vec<SeatRow>, sqlx::Error> {
        sqlx::query_as(
            "select label, price, status, reservation_id, customer_id, expires_at
               from baseline_seats
              where showtime_id = $1
                and (label = any($2) or (customer_id = $3 and status = 'held'))
              order by label
                for update",
        )
        .bind(showtime.0)
        .bind(wanted)
        .bind(customer.0)
        .fetch_all(&mut **tx)
        .await
    }

    /// The reservation's showtime and seat count, if it is the customer's.
    async fn reservation_of(
        tx: &mut Transaction<'_, Postgres>,
        reservation: ReservationId,
        customer: UserId,
    ) -> Result<Option<(Uuid, usize)>, sqlx::Error> {
        let row: Option<(Uuid, Uuid, i32)> = sqlx::query_as(
            "select showtime_id, customer_id, cardinality(seats) from baseline_reservations where id = $1",
        )
        .bind(reservation.0)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row
            .filter(|(_, owner, _)| *owner == customer.0)
            .map(|(showtime, _, n)| (showtime, n as usize)))
    }

    /// Locks the reservation's seat rows, in label order.
    async fn lock_reservation(
        tx: &mut Transaction<'_, Postgres>,
        showtime: Uuid,
        reservation: ReservationId,
    ) -> Result<Vec<SeatRow>, sqlx::Error> {
        sqlx::query_as(
            "select label, price, status, reservation_id, customer_id, expires_at
               from baseline_seats
              where showtime_id = $1 and reservation_id = $2
              order by label
                for update",
        )
        .bind(showtime)
        .bind(reservation.0)
        .fetch_all(&mut **tx)
        .await
    }

    async fn try_release(&self, reservation: ReservationId, customer: UserId) -> Decided<()> {
        let mut tx = self.pool.begin().await?;
        let Some((showtime, _)) = Self::reservation_of(&mut tx, reservation, customer).await?
        else {
            return Ok(Err(ApiError::NotFound));
        };
        let rows = Self::lock_reservation(&mut tx, showtime, reservation).await?;
        let now = Utc::now();
        if rows.iter().any(|r| r.status == "sold") {
            return Ok(Err(ApiError::Conflict("the reservation is paid".into())));
        }
        // Already released or run out: the seats are free, nothing to record.
        if rows.iter().any(|r| r.is_taken(now)) {
            free_seats(&mut tx, ShowtimeId(showtime), reservation.0).await?;
            let released = ShowtimeEvent::HoldReleased {
                reservation_id: reservation,
                reason: ReleaseReason::Customer,
                released_at: now,
            };
            record(&mut tx, ShowtimeId(showtime), &[released]).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn try_pay(
        &self,
        reservation: ReservationId,
        customer: UserId,
    ) -> Decided<Vec<IssuedTicket>> {
        let mut tx = self.pool.begin().await?;
        let Some((showtime, count)) = Self::reservation_of(&mut tx, reservation, customer).await?
        else {
            return Ok(Err(ApiError::NotFound));
        };
        let rows = Self::lock_reservation(&mut tx, showtime, reservation).await?;
        let now = Utc::now();
        if rows.iter().any(|r| r.status == "sold") {
            return Ok(Err(ApiError::Conflict("the reservation is paid".into())));
        }
        if rows.len() != count || !rows.iter().all(|r| r.is_taken(now)) {
            return Ok(Err(ApiError::ReservationExpired(
                "the hold has expired or was released".into(),
            )));
        }
        let seats: Vec<SeatLabel> = rows
            .iter()
            .map(|r| SeatLabel::parse(&r.label).expect("stored labels are valid"))
            .collect();
        let price =
            Money::new(rows[0].price, self.currency.clone()).expect("stored prices are valid");
        let tickets = tickets_for(&seats, &price);
        sqlx::query("update baseline_seats set status = 'sold', expires_at = null where showtime_id = $1 and reservation_id = $2")
            .bind(showtime)
            .bind(reservation.0)
            .execute(&mut *tx)
            .await?;
        let events = paid_events(reservation, customer, &tickets, now);
        record(&mut tx, ShowtimeId(showtime), &events).await?;
        tx.commit().await?;
        Ok(Ok(tickets))
    }
}

#[async_trait]
impl SeatStore for SqlStore {
    async fn prepare(
        &self,
        showtimes: &[ShowtimeId],
        seats: &[SeatLabel],
        price: &Money,
    ) -> anyhow::Result<()> {
        for showtime in showtimes {
            sqlx::query(
                "insert into baseline_seats (showtime_id, label, price) select $1, unnest($2::text[]), $3",
            )
            .bind(showtime.0)
            .bind(labels(seats))
            .bind(price.amount)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("analyze baseline_seats")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hold(
        &self,
        showtime: ShowtimeId,
        customer: UserId,
        seats: Vec<SeatLabel>,
    ) -> Result<Held, ApiError> {
        self.retrying(|| self.try_hold(showtime, customer, &seats))
            .await
    }

    async fn release(&self, reservation: ReservationId, customer: UserId) -> Result<(), ApiError> {
        self.retrying(|| self.try_release(reservation, customer))
            .await
    }

    async fn pay(
        &self,
        reservation: ReservationId,
        customer: UserId,
    ) -> Result<Vec<IssuedTicket>, ApiError> {
        self.retrying(|| self.try_pay(reservation, customer)).await
    }

    async fn history(&self, showtime: ShowtimeId) -> anyhow::Result<Vec<ShowtimeEvent>> {
        let payloads: Vec<Value> = sqlx::query_scalar(
            "select payload from baseline_events where showtime_id = $1 order by at, position",
        )
        .bind(showtime.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(payloads
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?)
    }
}

/// Frees every seat a reservation holds.
async fn free_seats(
    tx: &mut Transaction<'_, Postgres>,
    showtime: ShowtimeId,
    reservation: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update baseline_seats
            set status = 'free', reservation_id = null, customer_id = null, expires_at = null
          where showtime_id = $1 and reservation_id = $2 and status = 'held'",
    )
    .bind(showtime.0)
    .bind(reservation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks the seats held by the new reservation and records the reservation.
async fn take_seats(
    tx: &mut Transaction<'_, Postgres>,
    showtime: ShowtimeId,
    customer: UserId,
    held: &Held,
    wanted: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update baseline_seats
            set status = 'held', reservation_id = $3, customer_id = $4, expires_at = $5
          where showtime_id = $1 and label = any($2)",
    )
    .bind(showtime.0)
    .bind(wanted)
    .bind(held.reservation_id.0)
    .bind(customer.0)
    .bind(held.expires_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "insert into baseline_reservations (id, showtime_id, customer_id, seats) values ($1, $2, $3, $4)",
    )
    .bind(held.reservation_id.0)
    .bind(showtime.0)
    .bind(customer.0)
    .bind(wanted)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends the decision's events to the history, in the deciding transaction.
async fn record(
    tx: &mut Transaction<'_, Postgres>,
    showtime: ShowtimeId,
    events: &[ShowtimeEvent],
) -> Result<(), sqlx::Error> {
    let times: Vec<DateTime<Utc>> = events.iter().map(ShowtimeEvent::time).collect();
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).expect("events serialize"))
        .collect();
    sqlx::query(
        "insert into baseline_events (showtime_id, at, payload)
         select $1, t.at, t.payload from unnest($2::timestamptz[], $3::jsonb[]) as t(at, payload)",
    )
    .bind(showtime.0)
    .bind(times)
    .bind(payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A successful one-step payment, as the engine records its two halves.
pub(super) fn paid_events(
    reservation: ReservationId,
    customer: UserId,
    tickets: &[IssuedTicket],
    now: DateTime<Utc>,
) -> Vec<ShowtimeEvent> {
    let payment = PaymentId(Uuid::now_v7());
    let amount = tickets
        .iter()
        .map(|t| t.price.clone())
        .reduce(|a, b| a.checked_add(&b).expect("one currency"))
        .expect("a hold has seats");
    vec![
        ShowtimeEvent::PaymentStarted(PaymentStarted {
            reservation_id: reservation,
            payment_id: payment,
            amount,
            started_at: now,
            pinned_until: now + PIN_FOR,
        }),
        ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: reservation,
            payment_id: payment,
            customer_id: customer,
            tickets: tickets.to_vec(),
            issued_at: now,
        }),
    ]
}

/// The locked rows of the requested seats if each exists and is free at `now` (or held by
/// the hold being `replaced`); otherwise the refusal.
fn free_to_hold<'r>(
    rows: &'r [SeatRow],
    wanted: &[String],
    replaced: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Vec<&'r SeatRow>, ApiError> {
    let requested: Vec<&SeatRow> = rows.iter().filter(|r| wanted.contains(&r.label)).collect();
    if requested.len() < wanted.len() {
        return Err(unknown_seats(wanted, &requested));
    }
    let taken: Vec<String> = requested
        .iter()
        .filter(|r| r.is_taken(now) && r.reservation_id != replaced)
        .map(|r| r.label.clone())
        .collect();
    if !taken.is_empty() {
        return Err(ApiError::SeatsUnavailable(taken));
    }
    Ok(requested)
}

/// The event of a new hold.
fn seats_held(held: &Held, customer: UserId) -> ShowtimeEvent {
    ShowtimeEvent::SeatsHeld(SeatsHeld {
        reservation_id: held.reservation_id,
        customer_id: customer,
        seats: held.seats.clone(),
        total: held.total.clone(),
        held_at: held.held_at,
        expires_at: held.expires_at,
        row_started_at: None,
    })
}

fn unknown_seats(wanted: &[String], found: &[&SeatRow]) -> ApiError {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !found.iter().any(|r| &r.label == *w))
        .map(String::as_str)
        .collect();
    ApiError::field(
        "seats",
        format!("the screen has no seat {}", missing.join(", ")),
    )
}

fn is_deadlock(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01")
}

/// A database failure as the API answers it: no connection in time means overloaded.
fn db_error(e: sqlx::Error) -> ApiError {
    match e {
        sqlx::Error::PoolTimedOut => ApiError::Overloaded("no database connection free".into(), 1),
        other => ApiError::Internal(other.into()),
    }
}
