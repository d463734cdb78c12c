//! Marquee's event store: everything between a decided event and the `events` table. It
//! knows the domain and PostgreSQL, and nothing of HTTP, authentication or NATS.
//!
//! - [`db`]: creating the database and applying the schema's migrations.
//! - [`event_store`]: loading aggregates and showtimes (from their snapshots), appending
//!   events, and each event's metadata.
//! - [`writer`]: one writer task per active showtime, batching appends.
//! - [`writer_registry`]: which showtimes have a writer, and which to stop past the cap.
//! - [`booking_index`]: the lookup rows derived from showtime events, in the same transaction.
//! - [`group_commit`]: one commit for the batches of many showtime writers.
//! - [`reservation_cache`]: the showtime and customer of recent reservations, in memory.

pub mod booking_index;
pub mod db;
pub mod event_store;
pub mod group_commit;
pub mod reservation_cache;
pub mod writer;
pub mod writer_registry;
