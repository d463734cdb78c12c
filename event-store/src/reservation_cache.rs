//! Which showtime, and which customer, each recent reservation of this process belongs to, so
//! that releasing or paying for a hold finds its showtime's writer without asking the database.
//!
//! On a hot showtime most holds are followed by a release or a payment, and each of those used
//! to start with a `reservation_index` lookup: a round trip to PostgreSQL per request, before
//! the writer saw it. A reservation's showtime and customer never change once its hold is
//! recorded, so an entry can never be stale; `reservation_index` (written with the events)
//! stays the answer for everything else: holds made by another process, before this one
//! started, or pushed out of the cache.
//!
//! The cache is bounded by keeping two generations: when the newer one is full, the older is
//! dropped whole, so the hot path does no per-entry bookkeeping.

use marquee_domain::{ReservationId, ShowtimeId, UserId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries per generation: at most twice this many are kept (about 10 MB in all).
pub const GENERATION: usize = 100_000;

/// Whose a reservation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub showtime: ShowtimeId,
    pub customer: UserId,
}

/// A bounded map from recent reservations to their owners.
pub struct ReservationCache {
    capacity: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<ReservationId, Owner>,
    previous: HashMap<ReservationId, Owner>,
}

impl Default for ReservationCache {
    fn default() -> Self {
        Self::new(GENERATION)
    }
}

impl ReservationCache {
    /// A cache keeping between `capacity` and twice `capacity` of the newest entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            generations: Mutex::default(),
        }
    }

    /// Remembers the owners of reservations whose holds were just recorded.
    pub fn insert(&self, entries: impl IntoIterator<Item = (ReservationId, Owner)>) {
        let mut g = self.generations.lock().expect("lock poisoned");
        for (reservation, owner) in entries {
            if g.current.len() >= self.capacity {
                g.previous = std::mem::take(&mut g.current);
            }
            g.current.insert(reservation, owner);
        }
    }

    /// The owner of `reservation`, if it is one this cache still knows.
    pub fn get(&self, reservation: ReservationId) -> Option<Owner> {
        let g = self.generations.lock().expect("lock poisoned");
        g.current
            .get(&reservation)
            .or_else(|| g.previous.get(&reservation))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn owner() -> Owner {
        Owner {
            showtime: ShowtimeId(Uuid::now_v7()),
            customer: UserId(Uuid::now_v7()),
        }
    }

    #[test]
    fn a_remembered_reservation_is_found_with_its_owner() {
        let cache = ReservationCache::new(10);
        let (r, o) = (ReservationId(Uuid::now_v7()), owner());
        cache.insert([(r, o)]);
        assert_eq!(cache.get(r), Some(o));
        assert_eq!(cache.get(ReservationId(Uuid::now_v7())), None);
    }

    #[test]
    fn the_cache_keeps_the_newest_entries_and_at_most_two_generations() {
        let cache = ReservationCache::new(3);
        let entries: Vec<_> = (0..7)
            .map(|_| (ReservationId(Uuid::now_v7()), owner()))
            .collect();
        cache.insert(entries.iter().copied());
        let kept: Vec<bool> = entries
            .iter()
            .map(|(r, _)| cache.get(*r).is_some())
            .collect();
        // Generations of three: [0 1 2] [3 4 5] [6]; the first was dropped when the third began.
        assert_eq!(kept, [false, false, false, true, true, true, true]);
    }
}
