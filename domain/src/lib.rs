//! Marquee's domain: the aggregates, their commands, events and errors, and the value types
//! they are made of.
//!
//! Everything here is pure. No clock is read and nothing touches a network or a disk: what a
//! decision needs (the time, a price, a fresh id) arrives in the command, so the same command
//! against the same history always gives the same events.
//!
//! - [`ids`]: typed UUID identifiers (`ShowtimeId`, `ReservationId`, ...).
//! - [`money`]: integer minor units with a currency.
//! - [`seating`]: seat kinds, seat labels and the layout strings theaters describe screens with.
//! - [`theater`]: the `Theater` aggregate; it owns its screens' schedules.
//! - [`movie`]: the `Movie` aggregate.
//! - [`showtime`]: the `Showtime` aggregate, the seat inventory of one screening.
//! - [`upcast`]: reading events written in older shapes.
//! - [`audit`]: an independent checker of the booking invariants over a sequence of events.

pub mod audit;
pub mod ids;
pub mod money;
pub mod movie;
pub mod seating;
pub mod showtime;
pub mod theater;
pub mod upcast;

pub use ids::*;

/// A command's stable name, recorded in the metadata of the events it causes.
pub trait CommandName {
    fn name(&self) -> &'static str;
}

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

/// Hands decided events to cqrs-es's sink, which applies each to the aggregate: the body of
/// every aggregate's `handle`, whose rules live in a plain `decide` function.
async fn record<A: Aggregate>(
    aggregate: &mut A,
    decided: Result<Vec<A::Event>, A::Error>,
    sink: &EventSink<A>,
) -> Result<(), A::Error> {
    for event in decided? {
        sink.write(event, aggregate).await;
    }
    Ok(())
}
pub use money::{Currency, Money, MoneyError};
pub use seating::{SeatKind, SeatLabel, SeatLayout};
