//! The `marquee` binary's crate: the composition root. It builds the engine from the crates
//! below it and runs the roles a process is asked for, and it holds the operator commands.
//! The binary (`main.rs`) parses the command line and calls one of these.
//!
//! - [`startup`]: builds the state, and runs the engine's roles (API with its timers, relay,
//!   projectors).
//! - [`operator`]: `marquee events` (export), `marquee replay` and `marquee check`.
//! - [`check`]: the invariant checker behind `marquee check`.
//! - [`generate`]: a realistic generated history for analysis and benchmarks.
//! - [`timer`]: the hold-expiry timer, one of the API role's background workers.

pub mod check;
pub mod generate;
pub mod operator;
pub mod startup;
pub mod timer;
