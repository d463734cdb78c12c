//! Which showtimes have a writer in this process, how recently each was used, and which to
//! stop when there are too many.
//!
//! A writer holds its showtime's state in memory, so their number is capped
//! (`MARQUEE_MAX_WRITERS`). Adding one past the cap picks the least recently used idle ones to
//! stop; their state is dropped and loaded from the store again on next use, which is how
//! every writer starts anyway. Whether an entry is idle is the caller's to say (the writer
//! knows its queue), so this module knows nothing of writers and [`crate::writer`] imports it,
//! never the other way round.

use marquee_domain::ShowtimeId;
use std::collections::HashMap;

/// How many writers a process runs by default.
pub const DEFAULT_MAX_WRITERS: usize = 10_000;

/// Entries by showtime, with their last use.
pub struct Registry<T> {
    entries: HashMap<ShowtimeId, Entry<T>>,
    /// Counts uses: an entry's `used` is the count at its last use. A counter instead of a
    /// clock: never equal for two uses, and free to read.
    uses: u64,
    cap: usize,
}

struct Entry<T> {
    value: T,
    used: u64,
}

impl<T: Clone> Registry<T> {
    /// An empty registry that lets at most `cap` entries stay (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            uses: 0,
            cap: cap.max(1),
        }
    }

    /// The entry of `id`, marked as just used; `make` creates it if there is none. A new entry
    /// that passes the cap comes with the entries removed to make room: the least recently
    /// used of those `idle` says may go, for the caller to stop. If none may go, the new entry
    /// is added anyway (work in flight is never dropped) and the next addition tries again.
    pub fn use_or_add(
        &mut self,
        id: ShowtimeId,
        make: impl FnOnce() -> T,
        idle: impl Fn(&T) -> bool,
    ) -> (T, Vec<T>) {
        self.uses += 1;
        let used = self.uses;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.used = used;
            return (entry.value.clone(), vec![]);
        }
        let mut removed = vec![];
        while self.entries.len() >= self.cap {
            // A scan rather than an ordered index: it runs only when a writer starts at the
            // cap, and keeps every use (the common case) one map lookup.
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| idle(&e.value))
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            removed.extend(self.entries.remove(&oldest).map(|e| e.value));
        }
        let value = make();
        let entry = Entry {
            value: value.clone(),
            used,
        };
        self.entries.insert(id, entry);
        (value, removed)
    }

    /// Removes the entry of `id` if `is_it` says it is the expected one (a newer entry for the
    /// same showtime may have replaced it).
    pub fn remove_if(&mut self, id: ShowtimeId, is_it: impl FnOnce(&T) -> bool) {
        if self.entries.get(&id).is_some_and(|e| is_it(&e.value)) {
            self.entries.remove(&id);
        }
    }

    /// The entry of `id`, without marking it used.
    pub fn get(&self, id: ShowtimeId) -> Option<&T> {
        self.entries.get(&id).map(|e| &e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ids(n: usize) -> Vec<ShowtimeId> {
        (0..n).map(|_| ShowtimeId(Uuid::new_v4())).collect()
    }

    #[test]
    fn adding_past_the_cap_removes_the_least_recently_used_idle_entry() {
        let mut registry = Registry::new(2);
        let [a, b, c] = ids(3)[..] else {
            unreachable!("three ids")
        };
        registry.use_or_add(a, || 'a', |_| true);
        registry.use_or_add(b, || 'b', |_| true);
        registry.use_or_add(a, || 'x', |_| true); // a is used again: b is now the oldest

        let (value, removed) = registry.use_or_add(c, || 'c', |_| true);

        assert_eq!((value, removed), ('c', vec!['b']));
        assert_eq!(registry.get(a), Some(&'a'));
        assert_eq!(registry.get(b), None);
    }

    #[test]
    fn a_busy_entry_is_never_removed_even_past_the_cap() {
        let mut registry = Registry::new(1);
        let [a, b] = ids(2)[..] else {
            unreachable!("two ids")
        };
        registry.use_or_add(a, || 'a', |_| false);

        let (_, removed) = registry.use_or_add(b, || 'b', |_| false);

        assert!(removed.is_empty());
        assert_eq!((registry.get(a), registry.get(b)), (Some(&'a'), Some(&'b')));
    }
}
