//! Commands a showtime accepts. Each carries the time it is decided at.

use crate::ids::*;
use crate::money::Money;
use crate::seating::{SeatKind, SeatLabel};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a showtime is: which movie, where, when, and at what prices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowtimeDetails {
    pub movie_id: MovieId,
    pub theater_id: TheaterId,
    pub screen_id: ScreenId,
    pub starts_at: DateTime<Utc>,
    /// When the movie ends (start plus runtime; the cleaning gap is the theater's business).
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub format: Option<String>,
    /// The screen's layout strings at the time of scheduling.
    pub layout: Vec<String>,
    pub prices: BTreeMap<SeatKind, Money>,
}

/// Every command of the showtime aggregate.
#[derive(Clone, Debug, PartialEq)]
pub enum ShowtimeCommand {
    Schedule(Schedule),
    HoldSeats(HoldSeats),
    ReleaseHold(ReleaseHold),
    ExpireHold(ExpireHold),
    StartPayment(StartPayment),
    ConfirmPayment(ConfirmPayment),
    FailPayment(FailPayment),
    Cancel(Cancel),
}

impl crate::CommandName for ShowtimeCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Schedule(_) => "ScheduleShowtime",
            Self::HoldSeats(_) => "HoldSeats",
            Self::ReleaseHold(_) => "ReleaseHold",
            Self::ExpireHold(_) => "ExpireHold",
            Self::StartPayment(_) => "StartPayment",
            Self::ConfirmPayment(_) => "ConfirmPayment",
            Self::FailPayment(_) => "FailPayment",
            Self::Cancel(_) => "CancelShowtime",
        }
    }
}

/// Puts a showtime on the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub id: ShowtimeId,
    pub details: ShowtimeDetails,
    pub now: DateTime<Utc>,
}

/// Holds seats for a customer, all or nothing. Releases that customer's earlier unpaid hold
/// on this showtime.
///
/// Holding again does not extend the clock: a hold placed while the customer's previous hold
/// is live, or less than `cooldown` after it ended, continues their row of holds and expires
/// when the row's first hold would have (`hold_for` after the row started). Once that window
/// is used up the customer must let go for `cooldown` before a new row (and a new window)
/// starts. A paid hold ends the row at once.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldSeats {
    pub reservation_id: ReservationId,
    pub customer_id: UserId,
    pub seats: Vec<SeatLabel>,
    /// The window of a row of holds.
    pub hold_for: TimeDelta,
    /// How long a customer must hold nothing on this showtime before a new row may start.
    pub cooldown: TimeDelta,
    pub now: DateTime<Utc>,
}

/// The customer gives a hold up.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseHold {
    pub reservation_id: ReservationId,
    pub customer_id: UserId,
    pub now: DateTime<Utc>,
}

/// Records that a hold's time ran out (sent by the timer).
#[derive(Clone, Debug, PartialEq)]
pub struct ExpireHold {
    pub reservation_id: ReservationId,
    pub now: DateTime<Utc>,
}

/// Pins a hold while its payment is in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct StartPayment {
    pub reservation_id: ReservationId,
    pub customer_id: UserId,
    pub payment_id: PaymentId,
    /// How long the pin lasts at most.
    pub pin_for: TimeDelta,
    pub now: DateTime<Utc>,
}

/// A ticket to issue: its id and the code printed on it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTicket {
    pub id: TicketId,
    pub code: String,
}

/// The payment succeeded: issue the tickets, or record a refund when the hold is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfirmPayment {
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    /// One per seat of the hold, in the hold's seat order.
    pub tickets: Vec<NewTicket>,
    pub now: DateTime<Utc>,
}

/// The payment was declined or failed.
#[derive(Clone, Debug, PartialEq)]
pub struct FailPayment {
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub reason: String,
    /// Whether trying again can succeed, as the processor says.
    pub retryable: bool,
    pub now: DateTime<Utc>,
}

/// Cancels the showtime: releases every hold and refunds every ticket.
#[derive(Clone, Debug, PartialEq)]
pub struct Cancel {
    pub now: DateTime<Utc>,
}
