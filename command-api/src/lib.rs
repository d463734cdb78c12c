//! Marquee's command side: the HTTP API, the hold-expiry timer and the payment reconciler,
//! over the event store of `marquee_event_store`. The `marquee` crate composes and runs them.
//!
//! - [`config`]: environment variables and their defaults.
//! - [`accounts`]: the `accounts` table, the only SQL for accounts.
//! - [`auth`]: bearer tokens, the extractors checking them, and the bootstrap admin.
//! - [`passwords`]: the password rule, and argon2id hashing, a bounded number at a time.
//! - [`payment`]: the payment provider trait and the built-in test card processor.
//! - [`admission`]: what the process takes on, and what it sheds at once (`503 overloaded`).
//! - [`ratelimit`]: per-address and per-account limits on login, registration and booking.
//! - [`idempotency`]: `Idempotency-Key` handling for creating POSTs.
//! - [`error`]: the API's one error type, rendered as problem+json.
//! - [`routes`]: one module per resource, and the OpenAPI document.
//! - [`timer`]: records hold expiries.
//! - [`reconcile`]: settles payments whose outcome was never recorded, and pays refunds due.
//! - [`state`]: what every handler shares (`AppState`).
//! - [`live`]: live seat maps fed from the event stream, for the seat-map streams.
//! - [`metrics`]: the Prometheus recorder, `/metrics` and the per-request series.
//! - [`readiness`]: the dependency checks behind `/readyz`, at most one a second.
//! - [`headers`]: request ids and the security headers of every answer.
//! - [`deadlines`]: how long a request's body and its answer may take.
//! - [`server`]: the HTTP/1 server loop, with a limit on reading request headers.
//! - [`app`]: the HTTP surface: every route behind the engine's middleware.

pub mod accounts;
pub mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod deadlines;
pub mod error;
pub mod headers;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod passwords;
pub mod payment;
pub mod ratelimit;
pub mod readiness;
pub mod reconcile;
pub mod routes;
pub mod server;
pub mod state;
pub mod timer;
