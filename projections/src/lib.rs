//! Marquee's read models, each built from the event log by a projection (one per file), and
//! the queries that serve browsing and search.
//!
//! Not built yet. Until it is, the command side answers its few reads (seat maps,
//! reservations, tickets) from the showtime writers' in-memory state and small lookup tables.
