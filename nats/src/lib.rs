//! JetStream plumbing for Marquee: stream setup, subjects, the relay that publishes the event
//! log (the outbox) to JetStream, and the durable consumer runner.
//!
//! Not built yet. The engine currently connects to NATS only to report readiness; the read
//! side (relay and projections) will live here and in `projections/`.
