//! The seat map of each showtime: one row per seat.
//!
//! A seat's status is computed when read, against the clock: sold with a valid ticket, held
//! while `held_until` is in the future, available otherwise. A hold therefore shows its seats
//! available from the instant it expires, before `HoldExpired` is recorded.

use crate::bulk::{BulkWriter, CopyRows};
use crate::projection::money_json;
use crate::projection::{decode, Projection, ProjectionError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marquee_domain::seating::{Row, Seat, SeatKind, SeatLayout};
use marquee_domain::showtime::{
    PaymentFailed, PaymentStarted, SeatsHeld, Showtime, ShowtimeDetails, ShowtimeEvent,
    TicketRefunded, TicketsIssued,
};
use marquee_event_store::envelope::Envelope;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, QueryBuilder};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

pub struct SeatMaps;

#[async_trait]
impl Projection for SeatMaps {
    fn name(&self) -> &'static str {
        "seat_maps"
    }
    fn aggregate_type(&self) -> &'static str {
        "Showtime"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["seats_view", "holds_view"]
    }

    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError> {
        let showtime: Uuid = event.aggregate_id.parse().unwrap_or_default();
        apply_one(db, showtime, decode::<ShowtimeEvent>(event)?).await
    }

    /// A run's holds, releases and expiries are folded in memory and written in at most
    /// four statements ([`HoldRun`]); any other event first writes what was folded, then
    /// goes alone. An on-sale's log is mostly holds, releases and expiries.
    async fn apply_run(
        &self,
        events: &[Envelope],
        db: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let showtime: Uuid = first.aggregate_id.parse().unwrap_or_default();
        let mut holds = HoldRun::default();
        for event in events {
            let event = decode::<ShowtimeEvent>(event)?;
            if let Some(other) = holds.fold(event) {
                holds.write(db, showtime).await?;
                apply_one(db, showtime, other).await?;
            }
        }
        holds.write(db, showtime).await?;
        Ok(())
    }
}

/// Applies one event of `showtime`.
async fn apply_one(
    db: &mut PgConnection,
    showtime: Uuid,
    event: ShowtimeEvent,
) -> Result<(), ProjectionError> {
    match event {
        ShowtimeEvent::ShowtimeScheduled { details, .. } => {
            insert_seats(db, showtime, &details).await?
        }
        ShowtimeEvent::SeatsHeld(h) => hold(db, showtime, &h).await?,
        ShowtimeEvent::HoldReleased { reservation_id, .. }
        | ShowtimeEvent::HoldExpired { reservation_id, .. } => free(db, reservation_id.0).await?,
        ShowtimeEvent::PaymentStarted(p) => pin(db, &p).await?,
        ShowtimeEvent::PaymentFailed(p) => unpin(db, &p).await?,
        ShowtimeEvent::TicketsIssued(t) => sell(db, showtime, &t).await?,
        ShowtimeEvent::TicketRefunded(r) => unsell(db, showtime, &r).await?,
        ShowtimeEvent::PaymentRefunded { .. } | ShowtimeEvent::ShowtimeCancelled { .. } => {}
    }
    Ok(())
}

/// The net effect of consecutive holds, releases and expiries of one showtime, folded in
/// memory: the same rows as [`hold`] and [`free`] one event at a time, in fewer statements.
#[derive(Default)]
struct HoldRun {
    /// Each seat a hold of the run touched, as it ends: held (reservation, customer, until)
    /// or free.
    seats: HashMap<String, Option<(Uuid, Uuid, DateTime<Utc>)>>,
    /// Holds the run recorded and did not close: their expiry and seats.
    open: HashMap<Uuid, (DateTime<Utc>, Vec<String>)>,
    /// Holds from before the run that it closes.
    closed_before: Vec<Uuid>,
}

impl HoldRun {
    /// Folds `event` in, or gives it back when it is not a hold, release or expiry.
    fn fold(&mut self, event: ShowtimeEvent) -> Option<ShowtimeEvent> {
        match event {
            ShowtimeEvent::SeatsHeld(h) => {
                let seats: Vec<String> = h.seats.iter().map(ToString::to_string).collect();
                let holder = (h.reservation_id.0, h.customer_id.0, h.expires_at);
                for seat in &seats {
                    self.seats.insert(seat.clone(), Some(holder));
                }
                self.open.insert(h.reservation_id.0, (h.expires_at, seats));
            }
            ShowtimeEvent::HoldReleased { reservation_id, .. }
            | ShowtimeEvent::HoldExpired { reservation_id, .. } => {
                match self.open.remove(&reservation_id.0) {
                    Some((_, seats)) => {
                        for seat in seats {
                            let entry = self.seats.get_mut(&seat).expect("folded with its hold");
                            if entry.is_some_and(|(r, _, _)| r == reservation_id.0) {
                                *entry = None;
                            }
                        }
                    }
                    None => self.closed_before.push(reservation_id.0),
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Writes what was folded (the holds closed from before the run first: a seat they free
    /// may be held again within the run) and starts afresh.
    async fn write(&mut self, db: &mut PgConnection, showtime: Uuid) -> Result<(), sqlx::Error> {
        let run = std::mem::take(self);
        if !run.closed_before.is_empty() {
            sqlx::query(
                "update seats_view set reservation_id = null, customer_id = null, held_until = null
                 where reservation_id = any($1)",
            )
            .bind(&run.closed_before)
            .execute(&mut *db)
            .await?;
            sqlx::query("delete from holds_view where reservation_id = any($1)")
                .bind(&run.closed_before)
                .execute(&mut *db)
                .await?;
        }
        if !run.seats.is_empty() {
            let (mut seats, mut holders, mut customers, mut untils) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (seat, state) in run.seats {
                seats.push(seat);
                holders.push(state.map(|(r, _, _)| r));
                customers.push(state.map(|(_, c, _)| c));
                untils.push(state.map(|(_, _, u)| u));
            }
            sqlx::query(
                "update seats_view s
                 set reservation_id = t.r, customer_id = t.c, held_until = t.u
                 from unnest($2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[]) as t(seat, r, c, u)
                 where s.showtime_id = $1 and s.seat = t.seat",
            )
            .bind(showtime)
            .bind(seats)
            .bind(holders)
            .bind(customers)
            .bind(untils)
            .execute(&mut *db)
            .await?;
        }
        if !run.open.is_empty() {
            let (holds, expiries): (Vec<Uuid>, Vec<DateTime<Utc>>) =
                run.open.into_iter().map(|(r, (e, _))| (r, e)).unzip();
            sqlx::query(
                "insert into holds_view (reservation_id, showtime_id, expires_at)
                 select r, $2, e from unnest($1::uuid[], $3::timestamptz[]) as t(r, e)
                 on conflict do nothing",
            )
            .bind(holds)
            .bind(showtime)
            .bind(expiries)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}

/// Marks the held seats with their hold, and records the hold's expiry.
async fn hold(db: &mut PgConnection, showtime: Uuid, h: &SeatsHeld) -> Result<(), sqlx::Error> {
    let seats: Vec<String> = h.seats.iter().map(ToString::to_string).collect();
    sqlx::query(
        "update seats_view set reservation_id = $3, customer_id = $4, held_until = $5
                     where showtime_id = $1 and seat = any($2)",
    )
    .bind(showtime)
    .bind(&seats)
    .bind(h.reservation_id.0)
    .bind(h.customer_id.0)
    .bind(h.expires_at)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "insert into holds_view (reservation_id, showtime_id, expires_at)
                     values ($1, $2, $3) on conflict do nothing",
    )
    .bind(h.reservation_id.0)
    .bind(showtime)
    .bind(h.expires_at)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Keeps the hold's seats held until the payment's pin ends.
async fn pin(db: &mut PgConnection, p: &PaymentStarted) -> Result<(), sqlx::Error> {
    sqlx::query("update seats_view set held_until = $2 where reservation_id = $1")
        .bind(p.reservation_id.0)
        .bind(p.pinned_until)
        .execute(db)
        .await?;
    Ok(())
}

/// Puts the hold's seats back to the hold's own expiry after a failed payment.
async fn unpin(db: &mut PgConnection, p: &PaymentFailed) -> Result<(), sqlx::Error> {
    // Back to the hold's own expiry, never past the pin that just ended (the
    // aggregate's rule): the hold's expiry becomes the earlier of the two.
    sqlx::query(
        "update holds_view h set expires_at = least(h.expires_at,
                         (select max(s.held_until) from seats_view s where s.reservation_id = $1))
                     where h.reservation_id = $1",
    )
    .bind(p.reservation_id.0)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "update seats_view s set held_until = h.expires_at
                     from holds_view h
                     where h.reservation_id = $1 and s.reservation_id = $1",
    )
    .bind(p.reservation_id.0)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks each ticket's seat sold, and clears the hold the tickets were paid from.
async fn sell(db: &mut PgConnection, showtime: Uuid, t: &TicketsIssued) -> Result<(), sqlx::Error> {
    for ticket in &t.tickets {
        sqlx::query(
            "update seats_view set ticket_id = $3, reservation_id = null,
                                customer_id = null, held_until = null
                         where showtime_id = $1 and seat = $2",
        )
        .bind(showtime)
        .bind(ticket.seat.as_str())
        .bind(ticket.ticket_id.0)
        .execute(&mut *db)
        .await?;
    }
    free(db, t.reservation_id.0).await
}

/// Makes a refunded ticket's seat available again.
async fn unsell(
    db: &mut PgConnection,
    showtime: Uuid,
    r: &TicketRefunded,
) -> Result<(), sqlx::Error> {
    // By the showtime too: `ticket_id` has no index of its own, and without the
    // key's prefix each refund scanned every seat of every showtime.
    sqlx::query(
        "update seats_view set ticket_id = null
                     where showtime_id = $1 and ticket_id = $2",
    )
    .bind(showtime)
    .bind(r.ticket_id.0)
    .execute(db)
    .await?;
    Ok(())
}

async fn insert_seats(
    db: &mut PgConnection,
    showtime: Uuid,
    d: &ShowtimeDetails,
) -> Result<(), sqlx::Error> {
    let layout = SeatLayout::parse(&d.layout).unwrap_or_default();
    let seats: Vec<(usize, &Row, usize, &Seat)> = layout
        .rows
        .iter()
        .enumerate()
        .flat_map(|(r, row)| {
            row.seats
                .iter()
                .enumerate()
                .map(move |(s, seat)| (r, row, s, seat))
        })
        .collect();
    // One statement for the whole screen: a showtime has hundreds of seats.
    for chunk in seats.chunks(5_000) {
        let mut b = QueryBuilder::new(
            "insert into seats_view (showtime_id, seat, row_name, row_index, seat_index,
                                     column_index, kind, price) ",
        );
        b.push_values(chunk, |mut v, (row_index, row, seat_index, seat)| {
            v.push_bind(showtime)
                .push_bind(seat.label.as_str())
                .push_bind(&row.name)
                .push_bind(*row_index as i32)
                .push_bind(*seat_index as i32)
                .push_bind(seat.column as i32)
                .push_bind(seat.kind.as_str())
                .push_bind(d.prices.get(&seat.kind).map_or(Value::Null, money_json));
        });
        b.push(" on conflict do nothing");
        b.build().execute(&mut *db).await?;
    }
    Ok(())
}

/// Bulk rebuilds: streams every seat of every showtime into `seats_view`, and gathers the
/// holds still open (a few per showtime) for `holds_view` at the end.
pub struct BulkSeatMaps {
    pool: PgPool,
    schema: String,
    seats: CopyRows,
    holds: Vec<(Uuid, Uuid, DateTime<Utc>)>,
}

impl BulkSeatMaps {
    pub async fn start(pool: &PgPool, schema: &str) -> Result<Self, sqlx::Error> {
        let seats = CopyRows::start(
            pool,
            schema,
            "seats_view",
            "showtime_id, seat, row_name, row_index, seat_index, column_index, kind, price, \
             reservation_id, customer_id, held_until, ticket_id",
        )
        .await?;
        Ok(Self {
            pool: pool.clone(),
            schema: schema.to_owned(),
            seats,
            holds: Vec::new(),
        })
    }
}

#[async_trait]
impl BulkWriter<Showtime> for BulkSeatMaps {
    async fn write(&mut self, state: &Showtime) -> Result<(), sqlx::Error> {
        let (Some(id), Some(d)) = (state.id, state.details.as_ref()) else {
            return Ok(());
        };
        let prices: BTreeMap<SeatKind, String> = d
            .prices
            .iter()
            .map(|(kind, m)| (*kind, money_json(m).to_string()))
            .collect();
        for (row_index, row) in state.layout().rows.iter().enumerate() {
            for (seat_index, seat) in row.seats.iter().enumerate() {
                let holder = state.holder_of(&seat.label);
                self.seats
                    .uuid(id.0)
                    .text(seat.label.as_str())
                    .text(&row.name)
                    .int4(row_index)
                    .int4(seat_index)
                    .int4(seat.column)
                    .text(seat.kind.as_str())
                    .jsonb_text(prices.get(&seat.kind).map_or("null", String::as_str))
                    .uuid_or_null(holder.map(|h| h.id.0))
                    .uuid_or_null(holder.map(|h| h.customer_id.0))
                    .time(holder.and_then(|h| h.deadline()))
                    .uuid_or_null(state.ticket_of(&seat.label).map(|t| t.id.0));
                self.seats.end_row().await?;
            }
        }
        self.holds
            .extend(state.open_holds().map(|h| (h.id.0, id.0, h.expires_at)));
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), sqlx::Error> {
        self.seats.finish().await?;
        let mut rows = CopyRows::start(
            &self.pool,
            &self.schema,
            "holds_view",
            "reservation_id, showtime_id, expires_at",
        )
        .await?;
        for (reservation, showtime, expires) in &self.holds {
            rows.uuid(*reservation).uuid(*showtime).time(Some(*expires));
            rows.end_row().await?;
        }
        rows.finish().await?;
        Ok(())
    }
}

/// Clears a closed hold from its seats (those another hold has since taken keep theirs).
async fn free(db: &mut PgConnection, reservation: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update seats_view set reservation_id = null, customer_id = null, held_until = null
         where reservation_id = $1",
    )
    .bind(reservation)
    .execute(&mut *db)
    .await?;
    sqlx::query("delete from holds_view where reservation_id = $1")
        .bind(reservation)
        .execute(db)
        .await?;
    Ok(())
}

/// One seat at a given time.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct SeatRow {
    pub seat: String,
    pub row_name: String,
    pub column_index: i32,
    pub kind: String,
    pub price: Value,
    /// `available`, `held` or `sold`.
    pub status: String,
    /// Whether the seat is held by the customer asked about.
    pub mine: bool,
}

/// The seat map of a showtime at `at`, front row first, left to right; `None` if the
/// showtime is unknown. `caller` marks their own held seats.
pub async fn get(
    pool: &PgPool,
    showtime: Uuid,
    at: DateTime<Utc>,
    caller: Option<Uuid>,
) -> Result<Option<Vec<SeatRow>>, sqlx::Error> {
    let rows: Vec<SeatRow> = sqlx::query_as(
        "select seat, row_name, column_index, kind, price,
                case when ticket_id is not null then 'sold'
                     when held_until > $2 then 'held'
                     else 'available' end as status,
                (ticket_id is null and held_until > $2 and customer_id = $3) is true as mine
         from seats_view where showtime_id = $1
         order by row_index, seat_index",
    )
    .bind(showtime)
    .bind(at)
    .bind(caller)
    .fetch_all(pool)
    .await?;
    Ok((!rows.is_empty()).then_some(rows))
}
