//! Admission: a cap on the requests this process works on at once.
//!
//! Past saturation, every request admitted makes every other one later: a hot showtime's
//! queue, the database pool and the two cores are shared. So once `MARQUEE_MAX_IN_FLIGHT`
//! requests are in progress, the next one is answered `503 overloaded` with `Retry-After`
//! at once, before its token is checked or its body read, which costs a small part of what
//! serving it would. The excess is shed; what is admitted keeps its latency.
//!
//! A request counts from the moment it passes here until its handler has answered (a seat-map
//! stream counts only until its headers are sent). Health checks and metrics are never shed,
//! so an overloaded process still reports on itself.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How long a shed client is asked to wait before it tries again, in seconds.
const RETRY_AFTER: u64 = 1;

/// The cap, shared by every route of one router; `None` admits everything.
#[derive(Clone, Default)]
pub struct Gate(Option<Arc<Semaphore>>);

impl Gate {
    pub fn new(max_in_flight: Option<usize>) -> Self {
        Self(max_in_flight.map(|n| Arc::new(Semaphore::new(n))))
    }
}

/// Paths that are always served: the process's own health and metrics.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Runs the request if there is room, answers `503 overloaded` at once if not.
pub async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Some(semaphore) = gate.0 else {
        return next.run(request).await;
    };
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    match semaphore.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("marquee_requests_shed_total", "reason" => "in_flight").increment(1);
            ApiError::Overloaded(
                "the engine is working on as many requests as it can; retry shortly".into(),
                RETRY_AFTER,
            )
            .into_response()
        }
    }
}
