//! Marquee's HTTP API, over the event store (`marquee_event_store`), the payments
//! (`marquee_payments`) and the read models (`marquee_projections`). The `marquee` crate
//! composes and runs it.
//!
//! - [`config`]: environment variables and their defaults.
//! - [`accounts`]: the `accounts` table, the only SQL for accounts.
//! - [`auth`]: bearer tokens, the extractors checking them, and the bootstrap admin.
//! - [`passwords`]: the password rule, and argon2id hashing, a bounded number at a time.
//! - [`admission`]: what the process takes on, and what it sheds at once (`503 overloaded`).
//! - [`ratelimit`]: per-address and per-account limits on login, registration and booking.
//! - [`idempotency`]: `Idempotency-Key` handling for creating POSTs.
//! - [`error`]: the API's one error type, rendered as problem+json.
//! - [`routes`]: one module per resource, and the OpenAPI document.
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
pub mod ratelimit;
pub mod readiness;
pub mod routes;
pub mod server;
pub mod state;
