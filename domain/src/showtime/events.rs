//! What can happen to a showtime. Wire names (`event_type`) and versions are stable: analysts
//! and projections read them long after they were written.

use super::commands::ShowtimeDetails;
use crate::ids::*;
use crate::money::Money;
use crate::seating::SeatLabel;
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

/// Every event of the showtime aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShowtimeEvent {
    ShowtimeScheduled {
        id: ShowtimeId,
        details: ShowtimeDetails,
        scheduled_at: DateTime<Utc>,
    },
    SeatsHeld(SeatsHeld),
    HoldReleased {
        reservation_id: ReservationId,
        reason: ReleaseReason,
        released_at: DateTime<Utc>,
    },
    HoldExpired {
        reservation_id: ReservationId,
        /// The instant the hold ran out (its expiry, or the end of its payment pin).
        expired_at: DateTime<Utc>,
    },
    PaymentStarted(PaymentStarted),
    PaymentFailed(PaymentFailed),
    TicketsIssued(TicketsIssued),
    /// A payment succeeded for a hold that was gone, so it was given back.
    PaymentRefunded {
        reservation_id: ReservationId,
        payment_id: PaymentId,
        amount: Money,
        refunded_at: DateTime<Utc>,
    },
    ShowtimeCancelled {
        cancelled_at: DateTime<Utc>,
    },
    TicketRefunded(TicketRefunded),
}

/// Why a hold was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The customer gave it up.
    Customer,
    /// The customer held other seats of the same showtime.
    Replaced,
    /// The showtime was cancelled.
    ShowtimeCancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsHeld {
    pub reservation_id: ReservationId,
    pub customer_id: UserId,
    pub seats: Vec<SeatLabel>,
    pub total: Money,
    pub held_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the hold continues the customer's row of holds on this showtime, the instant the
    /// row's first hold was placed: `expires_at` is never later than it plus the hold window.
    /// Absent when the hold starts a row of its own (the row starts at `held_at`), as in
    /// events written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_started_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentStarted {
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub started_at: DateTime<Utc>,
    pub pinned_until: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub reason: String,
    /// Whether trying again (another card, later) can succeed. Added in version 2; version 1
    /// events are upcast (see [`crate::upcast`]).
    pub retryable: bool,
    pub failed_at: DateTime<Utc>,
}

/// One ticket as issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedTicket {
    pub ticket_id: TicketId,
    pub seat: SeatLabel,
    pub price: Money,
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketsIssued {
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub customer_id: UserId,
    pub tickets: Vec<IssuedTicket>,
    pub issued_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRefunded {
    pub ticket_id: TicketId,
    pub reservation_id: ReservationId,
    pub payment_id: PaymentId,
    pub amount: Money,
    pub refunded_at: DateTime<Utc>,
}

impl ShowtimeEvent {
    /// The time the event's decision was made at (or, for an expiry, the instant it expired).
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Self::ShowtimeScheduled { scheduled_at, .. } => *scheduled_at,
            Self::SeatsHeld(e) => e.held_at,
            Self::HoldReleased { released_at, .. } => *released_at,
            Self::HoldExpired { expired_at, .. } => *expired_at,
            Self::PaymentStarted(e) => e.started_at,
            Self::PaymentFailed(e) => e.failed_at,
            Self::TicketsIssued(e) => e.issued_at,
            Self::PaymentRefunded { refunded_at, .. } => *refunded_at,
            Self::ShowtimeCancelled { cancelled_at } => *cancelled_at,
            Self::TicketRefunded(e) => e.refunded_at,
        }
    }

    /// The reservation the event is about, if any.
    pub fn reservation_id(&self) -> Option<ReservationId> {
        match self {
            Self::ShowtimeScheduled { .. } | Self::ShowtimeCancelled { .. } => None,
            Self::SeatsHeld(e) => Some(e.reservation_id),
            Self::HoldReleased { reservation_id, .. }
            | Self::HoldExpired { reservation_id, .. }
            | Self::PaymentRefunded { reservation_id, .. } => Some(*reservation_id),
            Self::PaymentStarted(e) => Some(e.reservation_id),
            Self::PaymentFailed(e) => Some(e.reservation_id),
            Self::TicketsIssued(e) => Some(e.reservation_id),
            Self::TicketRefunded(e) => Some(e.reservation_id),
        }
    }
}

impl DomainEvent for ShowtimeEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ShowtimeScheduled { .. } => "ShowtimeScheduled",
            Self::SeatsHeld(_) => "SeatsHeld",
            Self::HoldReleased { .. } => "HoldReleased",
            Self::HoldExpired { .. } => "HoldExpired",
            Self::PaymentStarted(_) => "PaymentStarted",
            Self::PaymentFailed(_) => "PaymentFailed",
            Self::TicketsIssued(_) => "TicketsIssued",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
            Self::ShowtimeCancelled { .. } => "ShowtimeCancelled",
            Self::TicketRefunded(_) => "TicketRefunded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}
