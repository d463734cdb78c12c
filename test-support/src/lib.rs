//! What Marquee's tests share, as a dev-dependency of the crates whose tests need a database.
//!
//! - [`database`]: a database of its own for each test, migrated, or only named for an engine
//!   that creates it itself.

pub mod database;

pub use database::{fresh_database, fresh_database_url};
