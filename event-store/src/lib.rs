//! Marquee's event store: everything between a decided event and the `events` table. It
//! knows the domain and PostgreSQL, and nothing of HTTP, authentication or NATS.
//!
//! Its files depend on each other downwards only: `writer` on `event_store`, `append`,
//! `reservation_cache` and `writer_registry`; `event_store` on `append` and `booking_index`;
//! `append` on `booking_index`; and all of them on `error`, `metadata` and `db`.
//!
//! - [`db`]: creating the database and applying the schema's migrations.
//! - [`error`]: why the store could not do what was asked.
//! - [`metadata`]: each event's metadata (who, which command, which request).
//! - [`event_store`]: loading aggregates and showtimes (from their snapshots), running the
//!   stock load-decide-append commands of the other aggregates, storing snapshots.
//! - [`writer`]: one writer task per active showtime, batching appends.
//! - [`append`]: appending events: the rows, and a writer's batch with its lookup rows, alone
//!   or grouped with the batches of other showtimes in one commit.
//! - [`writer_registry`]: which showtimes have a writer, and which to stop past the cap.
//! - [`booking_index`]: the lookup rows derived from showtime events, in the same transaction.
//! - [`due`]: the work lists of the expiry timer and the payment reconciler.
//! - [`envelope`]: one stored event, as read from the `events` table (and published to
//!   JetStream as JSON).
//! - [`history`]: reading the event log for analysts: pages in commit order, a showtime as it
//!   stood at an instant, the story of a seat.
//! - [`reservation_cache`]: the showtime and customer of recent reservations, in memory.

pub mod append;
pub mod booking_index;
pub mod db;
pub mod due;
pub mod envelope;
pub mod error;
pub mod event_store;
pub mod history;
pub mod metadata;
pub mod reservation_cache;
pub mod writer;
pub mod writer_registry;
