//! Marquee's payments: what happens between a started payment and its recorded outcome.
//!
//! - [`processor`]: the card processor behind [`processor::PaymentProvider`], and the
//!   built-in test processor.
//! - [`reconcile`]: recording a charge's outcome through the showtime's writer, and the pass
//!   that settles payments a crash or a timeout left open and pays the refunds the log records.
//!
//! It knows the domain and the event store, and nothing of HTTP.

pub mod processor;
pub mod reconcile;
