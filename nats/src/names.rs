//! Names under a namespace (`MARQUEE_NAMESPACE`).
//!
//! | what | name |
//! |---|---|
//! | stream | `<ns>-events` |
//! | subject of an event | `<ns>.events.<aggregate_type>.<aggregate_id>` |
//! | durable consumer | `<ns>-<projection>` |

use crate::Error;

/// A validated namespace: 1 to 32 ASCII letters, digits, `_` or `-` (safe in stream names,
/// subjects and consumer names alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    pub fn new(ns: &str) -> Result<Self, Error> {
        let ok = (1..=32).contains(&ns.len())
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(ns.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "namespace {ns:?} must be 1 to 32 letters, digits, '_' or '-'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JetStream stream holding every event of the namespace.
    pub fn stream(&self) -> String {
        format!("{}-events", self.0)
    }

    /// The subjects the stream captures.
    pub fn all_subjects(&self) -> String {
        format!("{}.events.>", self.0)
    }

    /// The subject of one event. Ids are UUIDs; anything a subject cannot hold is replaced.
    pub fn subject(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        format!(
            "{}.events.{}.{}",
            self.0,
            token(aggregate_type),
            token(aggregate_id)
        )
    }

    /// The subjects of every event of one aggregate type.
    pub fn aggregate_filter(&self, aggregate_type: &str) -> String {
        format!("{}.events.{}.*", self.0, token(aggregate_type))
    }

    /// The durable name of a consumer.
    pub fn durable(&self, consumer: &str) -> String {
        format!("{}-{}", self.0, token(consumer))
    }

    /// The Postgres advisory lock key that elects one relay per namespace.
    pub fn relay_lock_key(&self) -> i64 {
        lock_key(&format!("marquee-relay:{}", self.0))
    }
}

/// A Postgres advisory lock key for a name: FNV-1a, stable across processes and versions,
/// unlike std's hasher.
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash as i64
}

fn token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_by_the_namespace() {
        let ns = Namespace::new("marquee").unwrap();
        assert_eq!(ns.stream(), "marquee-events");
        assert_eq!(ns.subject("Showtime", "abc"), "marquee.events.Showtime.abc");
        assert_eq!(ns.aggregate_filter("Showtime"), "marquee.events.Showtime.*");
        assert_eq!(ns.durable("seat_maps"), "marquee-seat_maps");
        assert_ne!(
            ns.relay_lock_key(),
            Namespace::new("other").unwrap().relay_lock_key()
        );
    }

    #[test]
    fn namespaces_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(33)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_cannot_add_subject_tokens() {
        let ns = Namespace::new("m").unwrap();
        assert_eq!(ns.subject("T", "a.b>c"), "m.events.T.a_b_c");
    }
}
