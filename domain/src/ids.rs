//! Typed identifiers. Each wraps a UUID so that a reservation id can never be passed where a
//! showtime id is expected. Ids are made outside the domain (v7, time-ordered) and handed in.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type!(
    /// A theater (a cinema building with one or more screens).
    TheaterId,
    /// One screen (auditorium) of a theater.
    ScreenId,
    /// A movie in the catalog.
    MovieId,
    /// One screening of a movie on a screen at a time.
    ShowtimeId,
    /// A customer's hold on seats of one showtime, and later its purchase.
    ReservationId,
    /// One ticket: one seat of one showtime.
    TicketId,
    /// One payment attempt for a reservation.
    PaymentId,
    /// A user account (customer or admin).
    UserId,
);
