//! Time limits on a request once it is admitted: its body must arrive within one limit, and
//! its answer must be ready within another.
//!
//! Admission counts a request from its headers on, and most routes read their body only
//! inside the handler, so a client that sends a byte every few seconds would keep its
//! admission slot (and a task) for as long as it liked: about `MARQUEE_MAX_IN_FLIGHT` such
//! clients are an outage. The body is therefore read here first, whole, within
//! `MARQUEE_BODY_TIMEOUT_MS` (past it: `408 request-timeout`, and nothing ran), and at most
//! the API's body limit of it (past it: `413`). The answer must then be ready within
//! `MARQUEE_REQUEST_TIMEOUT_MS` (past it: `503 overloaded`); a streamed answer counts as ready
//! once its stream starts, so the seat-map streams are not cut. Reading headers has its own
//! limit in the server itself (`crate::server`).

use crate::error::ApiError;
use axum::body::{to_bytes, Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Largest request body accepted. Every request of the API is small; a big body is a mistake
/// or an attack.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// The two limits.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// How long the whole body may take to arrive.
    pub body: Duration,
    /// How long the answer may take to be ready, body included.
    pub answer: Duration,
}

pub async fn enforce(State(limits): State<Deadlines>, request: Request, next: Next) -> Response {
    let answered = tokio::time::timeout(limits.answer, async {
        let request = match read_body(request, limits.body).await {
            Ok(request) => request,
            Err(e) => return e.into_response(),
        };
        next.run(request).await
    });
    match answered.await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("marquee_requests_timed_out_total").increment(1);
            ApiError::Overloaded(
                format!(
                    "no answer was ready within {} s; it may still take effect, so retry with \
                     the same Idempotency-Key",
                    limits.answer.as_secs()
                ),
                1,
            )
            .into_response()
        }
    }
}

/// The request with its body read, if it has one.
async fn read_body(request: Request, within: Duration) -> Result<Request, ApiError> {
    if request.body().is_end_stream() {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = tokio::time::timeout(within, to_bytes(body, MAX_REQUEST_BODY))
        .await
        .map_err(|_| {
            metrics::counter!("marquee_requests_timed_out_total").increment(1);
            ApiError::RequestTimeout(within)
        })?
        .map_err(|_| ApiError::PayloadTooLarge)?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
