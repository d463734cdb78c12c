//! JetStream plumbing for Marquee. It knows envelopes (an event as stored: aggregate, sequence,
//! type, JSON payload), never domain types.
//!
//! - [`names`]: the stream, subjects and durable consumer names of a namespace, so that two
//!   deployments (or test runs) on one NATS never see each other's events.
//! - [`envelope`]: the wire form of an event, read from the `events` table.
//! - [`stream`]: creating the stream.
//! - [`outbox`]: the log in commit order, the relay's leadership and its fenced checkpoint.
//! - [`relay`]: the outbox relay, publishing the `events` table to JetStream in commit order.
//! - [`consumer`]: a runner for durable pull consumers with explicit ack, redelivery with
//!   backoff, and parking of events that keep failing.

pub mod consumer;
pub mod names;
pub mod outbox;
pub mod relay;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;

pub use names::Namespace;

/// Errors of the JetStream plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps any NATS client error.
    pub fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}
