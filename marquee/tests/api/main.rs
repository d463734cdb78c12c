//! Black-box tests of the HTTP API against a real Postgres (a fresh database per test) and a
//! real NATS, through a real socket, exactly as the `marquee` binary serves it.

mod booking;
mod catalog;
mod check;
mod concurrency;
mod errors;
mod helpers;
mod history;
mod idempotency;
mod live;
mod memory;
mod my_tickets;
mod ops;
mod payments;
mod read_side;
mod security;
mod timeouts;
mod users;
