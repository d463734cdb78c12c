//! Marquee's read models. Each is built by one projection (one file here) from the event log,
//! and each file also holds the queries that serve it.
//!
//! - [`projection`]: the `Projection` trait, decoding events, money as stored.
//! - [`registry`]: the list of every projection, and of their bulk writers.
//! - [`tracking`]: applying events exactly once per projection and aggregate (progress rows,
//!   gap filling from Postgres, parking), and the JetStream consumer handler built on it.
//! - [`rebuild`]: building a projection from the whole events table, into any schema, and
//!   swapping a rebuilt projection in.
//! - [`bulk`]: the fast way to rebuild: fold aggregates in memory, write rows in bulk.
//! - [`theaters`], [`movies`], [`showtimes`], [`seat_maps`], [`tickets`]: the read models.

pub mod bulk;
pub mod movies;
pub mod projection;
pub mod rebuild;
pub mod registry;
pub mod seat_maps;
pub mod showtimes;
pub mod theaters;
pub mod tickets;
pub mod tracking;

pub use projection::{Projection, ProjectionError};
pub use registry::all;
