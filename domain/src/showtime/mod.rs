//! The `Showtime` aggregate: one screening of a movie, and the inventory of its seats.
//!
//! Every seat rule of Marquee is decided here: holds are all-or-nothing, a seat is in at most
//! one live hold, a sold seat has exactly one valid ticket, a paying customer's hold cannot
//! expire under them (until the pin's own bound passes), and holding again never extends a
//! hold: a customer's back-to-back holds share one window, then wait out a cooldown (see
//! [`HoldSeats`]). The cooldown is a setting the fold cannot know, so `SeatsHeld` records the
//! start of the row it continues.
//!
//! Time is an input. Each command carries `now`, and a hold counts as free the instant it
//! expires, whether or not `HoldExpired` was recorded yet. Commands can reach a showtime with
//! clocks a few milliseconds apart (two API processes, or a queue that reorders), so the
//! aggregate keeps the latest time it has decided at and never decides at an earlier one: a
//! seat that was free at 10:00:01 cannot be seen held again by a command stamped 10:00:00.
//!
//! - [`commands`]: what can be asked of a showtime.
//! - [`events`]: what can happen to it.
//! - [`decide`]: the rules, one function per command.
//! - this module: the state and how events fold into it.

pub mod commands;
mod decide;
pub mod events;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::ids::*;
use crate::money::Money;
use crate::seating::{SeatKind, SeatLabel, SeatLayout};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use commands::*;
pub use events::*;

/// Most seats one reservation may hold.
pub const MAX_SEATS_PER_HOLD: usize = 10;

/// Broken showtime rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowtimeError {
    #[error("the showtime is already scheduled")]
    AlreadyScheduled,
    #[error("no such showtime")]
    NotFound,
    #[error("the showtime is cancelled or has already started")]
    ShowtimeClosed,
    #[error("the screen has {} seats but no price for them", .0.as_str())]
    UnpricedKind(SeatKind),
    #[error("all prices of a showtime must be in one currency")]
    MixedCurrencies,
    #[error("the seat layout is not valid")]
    BadLayout,
    #[error("a showtime must end after it starts")]
    BadTimes,
    #[error("choose at least one seat")]
    NoSeats,
    #[error("at most {MAX_SEATS_PER_HOLD} seats can be held at once")]
    TooManySeats,
    #[error("seat {0} is requested twice")]
    DuplicateSeat(SeatLabel),
    #[error("these seats do not exist: {0:?}")]
    UnknownSeats(Vec<SeatLabel>),
    #[error("these seats are held or sold: {0:?}")]
    SeatsUnavailable(Vec<SeatLabel>),
    #[error("a reservation with this id already exists")]
    DuplicateReservation,
    #[error("a payment with this id was already started")]
    DuplicatePayment,
    /// Also the answer for a hold that was released or ran out: the showtime no longer keeps
    /// those (see [`Showtime::holds`]), so a caller that knows the reservation exists (its
    /// lookup row) reads it as closed.
    #[error("no such reservation")]
    ReservationNotFound,
    #[error("the reservation has expired or was released")]
    ReservationExpired,
    #[error("a payment for this reservation is in progress")]
    PaymentInProgress,
    #[error("the reservation is already paid")]
    AlreadyPaid,
    #[error("the hold has not expired yet")]
    NotExpiredYet,
    #[error("no payment {0} was started for this reservation")]
    UnknownPayment(PaymentId),
    #[error("one ticket per seat is needed")]
    TicketCountMismatch,
    /// Holding again does not extend a hold: the customer's row of holds has used up its
    /// window, and a new one starts only after they have held nothing for the cooldown.
    #[error("the hold window is used up; seats can be held again from {retry_at}")]
    HoldCooldown { retry_at: DateTime<Utc> },
}

/// Where a hold stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldStatus {
    /// Waiting for payment until `expires_at`.
    Held,
    /// A payment is in flight; the hold is pinned until `pinned_until`.
    Paying {
        payment_id: PaymentId,
        pinned_until: DateTime<Utc>,
    },
    Confirmed {
        payment_id: PaymentId,
    },
    Released,
    Expired,
}

/// The status a client sees, which also accounts for the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    Held,
    Paying,
    Confirmed,
    Expired,
    Released,
}

/// A customer's hold on seats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: ReservationId,
    pub customer_id: UserId,
    pub seats: Vec<SeatLabel>,
    pub total: Money,
    pub held_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: HoldStatus,
}

impl Hold {
    /// Whether the hold still keeps its seats at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        match &self.status {
            HoldStatus::Held => now < self.expires_at,
            HoldStatus::Paying { pinned_until, .. } => now < *pinned_until,
            _ => false,
        }
    }

    /// The status a client sees at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match &self.status {
            HoldStatus::Held | HoldStatus::Paying { .. } if !self.is_live(now) => {
                ReservationStatus::Expired
            }
            HoldStatus::Held => ReservationStatus::Held,
            HoldStatus::Paying { .. } => ReservationStatus::Paying,
            HoldStatus::Confirmed { .. } => ReservationStatus::Confirmed,
            HoldStatus::Released => ReservationStatus::Released,
            HoldStatus::Expired => ReservationStatus::Expired,
        }
    }

    /// When the hold stops keeping its seats unless something happens first.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        match &self.status {
            HoldStatus::Held => Some(self.expires_at),
            HoldStatus::Paying { pinned_until, .. } => Some(*pinned_until),
            _ => None,
        }
    }

    /// Whether the hold is released or ran out: closed without a sale.
    pub fn is_dropped(&self) -> bool {
        matches!(self.status, HoldStatus::Released | HoldStatus::Expired)
    }

    /// A hold rebuilt from the events about its reservation, in their order: how a hold the
    /// showtime no longer keeps (see [`Showtime::holds`]) is read back from the log. `None`
    /// without its `SeatsHeld`.
    pub fn replay(events: impl IntoIterator<Item = ShowtimeEvent>) -> Option<Hold> {
        let mut events = events.into_iter();
        let mut hold = events.find_map(|e| match e {
            ShowtimeEvent::SeatsHeld(e) => Some(Hold::placed(e)),
            _ => None,
        })?;
        for event in events {
            match event {
                ShowtimeEvent::PaymentStarted(e) => hold.on_payment_started(&e),
                ShowtimeEvent::PaymentFailed(e) => hold.on_payment_failed(&e),
                ShowtimeEvent::TicketsIssued(e) => {
                    hold.status = HoldStatus::Confirmed {
                        payment_id: e.payment_id,
                    }
                }
                ShowtimeEvent::HoldReleased { .. } => hold.status = HoldStatus::Released,
                ShowtimeEvent::HoldExpired { .. } => hold.status = HoldStatus::Expired,
                _ => {}
            }
        }
        Some(hold)
    }

    fn placed(e: SeatsHeld) -> Hold {
        Hold {
            id: e.reservation_id,
            customer_id: e.customer_id,
            seats: e.seats,
            total: e.total,
            held_at: e.held_at,
            expires_at: e.expires_at,
            status: HoldStatus::Held,
        }
    }

    fn on_payment_started(&mut self, e: &PaymentStarted) {
        self.status = HoldStatus::Paying {
            payment_id: e.payment_id,
            pinned_until: e.pinned_until,
        };
    }

    fn on_payment_failed(&mut self, e: &PaymentFailed) {
        if let HoldStatus::Paying {
            payment_id,
            pinned_until,
        } = self.status
        {
            if payment_id == e.payment_id {
                // Back to waiting for payment, but never past the pin: once the pin has run out
                // the seats may already belong to someone else.
                self.expires_at = self.expires_at.min(pinned_until);
                self.status = HoldStatus::Held;
            }
        }
    }
}

/// A ticket's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketStatus {
    Valid,
    Refunded,
}

/// One issued ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub customer_id: UserId,
    pub seat: SeatLabel,
    pub price: Money,
    pub code: String,
    pub issued_at: DateTime<Utc>,
    pub status: TicketStatus,
}

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    Started,
    Failed,
    Captured,
    Refunded,
}

/// One payment attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub reservation_id: ReservationId,
    pub amount: Money,
    pub state: PaymentState,
}

/// A seat's state at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held(ReservationId),
    Sold(TicketId),
}

/// A customer's row of holds on one showtime: holds placed back to back, each while the one
/// before was live or soon after it ended (see [`HoldSeats`]). They share one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HoldRow {
    /// When the row's first hold was placed.
    started_at: DateTime<Utc>,
    /// The row's latest hold.
    last: ReservationId,
    /// When `last` was released, expired or paid, as recorded; `None` while it is open.
    last_closed_at: Option<DateTime<Utc>>,
}

/// The showtime's state, folded from its events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Showtime {
    pub id: Option<ShowtimeId>,
    pub details: Option<ShowtimeDetails>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The latest time any recorded decision was made at; decisions never go back before it.
    pub clock: Option<DateTime<Utc>>,
    /// The holds that still matter to decisions: open ones (held or paying, also past their
    /// deadline until the expiry is recorded) and paid ones (at most one per seat). A hold
    /// that is released or runs out is dropped when that is recorded, so a showtime under
    /// churn keeps what its seats need, not its whole history; [`Hold::replay`] reads a
    /// dropped one back from the log.
    pub holds: BTreeMap<ReservationId, Hold>,
    pub tickets: BTreeMap<TicketId, Ticket>,
    pub payments: BTreeMap<PaymentId, Payment>,
    /// Seat kinds by label, from the layout.
    seat_kinds: HashMap<SeatLabel, SeatKind>,
    /// The latest hold placed on each seat that has not been closed. It may have expired by
    /// time; `Hold::is_live` decides.
    seat_holder: HashMap<SeatLabel, ReservationId>,
    /// Each customer's row of holds: its latest hold is released when they hold again, and
    /// its start bounds how long the next hold may last. One entry per customer who ever
    /// held seats here (what the cooldown needs, whatever its length).
    customer_row: HashMap<UserId, HoldRow>,
    /// The valid ticket of each sold seat.
    sold: HashMap<SeatLabel, TicketId>,
}

impl Showtime {
    /// The version of the state's stored shape and of the fold that builds it: a snapshot
    /// (the state written out) is only valid for the code that wrote it. Raise it whenever a
    /// field of the state changes, or what an event does to it.
    pub const SNAPSHOT_FORMAT: i32 = 1;

    /// Whether the showtime has been scheduled.
    pub fn exists(&self) -> bool {
        self.details.is_some()
    }

    /// The time a decision at `now` is made at: never before one already recorded.
    pub fn effective_now(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.clock.map_or(now, |c| c.max(now))
    }

    /// The layout of the screen, parsed.
    pub fn layout(&self) -> SeatLayout {
        self.details
            .as_ref()
            .and_then(|d| SeatLayout::parse(&d.layout).ok())
            .unwrap_or_default()
    }

    /// The price of a seat kind.
    pub fn price_of(&self, kind: SeatKind) -> Option<&Money> {
        self.details.as_ref().and_then(|d| d.prices.get(&kind))
    }

    /// The kind of a seat, `None` for a seat the screen does not have.
    pub fn seat_kind(&self, seat: &SeatLabel) -> Option<SeatKind> {
        self.seat_kinds.get(seat).copied()
    }

    /// A seat's state at `now`.
    pub fn seat_state(&self, seat: &SeatLabel, now: DateTime<Utc>) -> SeatState {
        if let Some(ticket) = self.sold.get(seat) {
            return SeatState::Sold(*ticket);
        }
        match self.live_holder(seat, now) {
            Some(hold) => SeatState::Held(hold.id),
            None => SeatState::Available,
        }
    }

    /// The hold keeping `seat` at `now`, if any.
    pub fn live_holder(&self, seat: &SeatLabel, now: DateTime<Utc>) -> Option<&Hold> {
        self.seat_holder
            .get(seat)
            .and_then(|r| self.holds.get(r))
            .filter(|h| h.is_live(now))
    }

    /// The latest open hold placed on `seat`, live or past its deadline.
    pub fn holder_of(&self, seat: &SeatLabel) -> Option<&Hold> {
        self.seat_holder
            .get(seat)
            .and_then(|r| self.holds.get(r))
            .filter(|h| h.deadline().is_some())
    }

    /// The valid ticket of `seat`, if it is sold.
    pub fn ticket_of(&self, seat: &SeatLabel) -> Option<&Ticket> {
        self.sold.get(seat).and_then(|t| self.tickets.get(t))
    }

    /// Holds that are still open (held or paying), live or past their deadline.
    pub fn open_holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds
            .values()
            .filter(|h| matches!(h.status, HoldStatus::Held | HoldStatus::Paying { .. }))
    }

    /// Decides a command against the current state. On success the events are returned but not
    /// applied; the caller applies them once they are stored.
    pub fn decide(&self, command: ShowtimeCommand) -> Result<Vec<ShowtimeEvent>, ShowtimeError> {
        match command {
            ShowtimeCommand::Schedule(c) => self.schedule(c),
            ShowtimeCommand::HoldSeats(c) => self.hold_seats(c),
            ShowtimeCommand::ReleaseHold(c) => self.release_hold(c),
            ShowtimeCommand::ExpireHold(c) => self.expire_hold(c),
            ShowtimeCommand::StartPayment(c) => self.start_payment(c),
            ShowtimeCommand::ConfirmPayment(c) => self.confirm_payment(c),
            ShowtimeCommand::FailPayment(c) => self.fail_payment(c),
            ShowtimeCommand::Cancel(c) => self.cancel(c),
        }
    }

    fn advance_clock(&mut self, at: DateTime<Utc>) {
        self.clock = Some(self.effective_now(at));
    }

    fn close_hold(&mut self, id: ReservationId, status: HoldStatus, at: DateTime<Utc>) {
        let Some(hold) = self.holds.get_mut(&id) else {
            return;
        };
        hold.status = status;
        if let Some(row) = self.customer_row.get_mut(&hold.customer_id) {
            if row.last == id {
                row.last_closed_at = Some(at);
            }
        }
        for seat in &hold.seats {
            if self.seat_holder.get(seat) == Some(&id) {
                self.seat_holder.remove(seat);
            }
        }
        // No decision reads a released or run-out hold again: its row keeps when it closed.
        if hold.is_dropped() {
            self.holds.remove(&id);
        }
    }

    fn apply_scheduled(&mut self, id: ShowtimeId, details: ShowtimeDetails) {
        self.id = Some(id);
        self.seat_kinds = SeatLayout::parse(&details.layout)
            .map(|l| l.seats().map(|s| (s.label.clone(), s.kind)).collect())
            .unwrap_or_default();
        self.details = Some(details);
    }

    fn apply_held(&mut self, e: SeatsHeld) {
        for seat in &e.seats {
            self.seat_holder.insert(seat.clone(), e.reservation_id);
        }
        self.customer_row.insert(
            e.customer_id,
            HoldRow {
                // An event without it started a row (and so did every hold before the rule).
                started_at: e.row_started_at.unwrap_or(e.held_at),
                last: e.reservation_id,
                last_closed_at: None,
            },
        );
        self.holds.insert(e.reservation_id, Hold::placed(e));
    }

    fn apply_payment_started(&mut self, e: PaymentStarted) {
        if let Some(hold) = self.holds.get_mut(&e.reservation_id) {
            hold.on_payment_started(&e);
        }
        self.payments.insert(
            e.payment_id,
            Payment {
                reservation_id: e.reservation_id,
                amount: e.amount,
                state: PaymentState::Started,
            },
        );
    }

    fn apply_payment_failed(&mut self, e: PaymentFailed) {
        if let Some(p) = self.payments.get_mut(&e.payment_id) {
            p.state = PaymentState::Failed;
        }
        if let Some(hold) = self.holds.get_mut(&e.reservation_id) {
            hold.on_payment_failed(&e);
        }
    }

    fn apply_tickets_issued(&mut self, e: TicketsIssued) {
        if let Some(p) = self.payments.get_mut(&e.payment_id) {
            p.state = PaymentState::Captured;
        }
        self.close_hold(
            e.reservation_id,
            HoldStatus::Confirmed {
                payment_id: e.payment_id,
            },
            e.issued_at,
        );
        for t in e.tickets {
            self.sold.insert(t.seat.clone(), t.ticket_id);
            self.tickets.insert(
                t.ticket_id,
                Ticket {
                    id: t.ticket_id,
                    reservation_id: e.reservation_id,
                    payment_id: e.payment_id,
                    customer_id: e.customer_id,
                    seat: t.seat,
                    price: t.price,
                    code: t.code,
                    issued_at: e.issued_at,
                    status: TicketStatus::Valid,
                },
            );
        }
    }

    fn apply_ticket_refunded(&mut self, e: TicketRefunded) {
        if let Some(t) = self.tickets.get_mut(&e.ticket_id) {
            t.status = TicketStatus::Refunded;
            if self.sold.get(&t.seat) == Some(&t.id) {
                self.sold.remove(&t.seat);
            }
        }
    }
}

impl Aggregate for Showtime {
    const TYPE: &'static str = "Showtime";
    type Command = ShowtimeCommand;
    type Event = ShowtimeEvent;
    type Error = ShowtimeError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let decided = self.decide(command);
        crate::record(self, decided, sink).await
    }

    fn apply(&mut self, event: Self::Event) {
        self.advance_clock(event.time());
        match event {
            ShowtimeEvent::ShowtimeScheduled { id, details, .. } => {
                self.apply_scheduled(id, details)
            }
            ShowtimeEvent::SeatsHeld(e) => self.apply_held(e),
            ShowtimeEvent::HoldReleased {
                reservation_id,
                released_at,
                ..
            } => self.close_hold(reservation_id, HoldStatus::Released, released_at),
            ShowtimeEvent::HoldExpired {
                reservation_id,
                expired_at,
                ..
            } => self.close_hold(reservation_id, HoldStatus::Expired, expired_at),
            ShowtimeEvent::PaymentStarted(e) => self.apply_payment_started(e),
            ShowtimeEvent::PaymentFailed(e) => self.apply_payment_failed(e),
            ShowtimeEvent::TicketsIssued(e) => self.apply_tickets_issued(e),
            ShowtimeEvent::PaymentRefunded { payment_id, .. } => {
                if let Some(p) = self.payments.get_mut(&payment_id) {
                    p.state = PaymentState::Refunded;
                }
            }
            ShowtimeEvent::ShowtimeCancelled { cancelled_at } => {
                self.cancelled_at = Some(cancelled_at)
            }
            ShowtimeEvent::TicketRefunded(e) => self.apply_ticket_refunded(e),
        }
    }
}
