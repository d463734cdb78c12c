//! What Marquee's tests share, as a dev-dependency of the crates whose tests need a database.
//!
//! - [`database`]: a database of its own for each test, migrated, or only named for an engine
//!   that creates it itself.
//! - [`events`]: rows appended to the `events` table through the store's own append, for the
//!   events a test needs in the log that the engine would not write for it.

pub mod database;
pub mod events;

pub use database::{fresh_database, fresh_database_url};
pub use events::{append, append_in, event, NewEvent};
