//! The live seat map: `GET /v1/showtimes/{id}/seats/stream`, Server-Sent Events fed by the
//! [`crate::live`] hub.
//!
//! A connection is sent the whole seat map first (`snapshot`), then one `seat` event per seat
//! whose status changes, as the events are published; `cancelled` when the showtime is
//! cancelled; a `: heartbeat` comment every 15 seconds so proxies keep the connection open.
//! Every event's `id` is the showtime's event sequence it reflects. A browser's `EventSource`
//! reconnects by itself and is sent a fresh snapshot then.

use super::showtimes::SeatMap;
use crate::error::{ApiError, AppPath};
use crate::live::{Change, LiveSeats, Subscription};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::Stream;
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(seat_stream))
}

/// How often an idle stream sends a comment, so proxies and browsers keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The `snapshot` event: the seat map (as `GET /v1/showtimes/{id}/seats` answers it, without
/// `mine`) and the showtime's event sequence it reflects.
#[derive(Serialize, ToSchema)]
pub struct SeatSnapshot {
    pub sequence: usize,
    #[serde(flatten)]
    pub map: SeatMap,
}

/// A `seat` event: one seat's new status.
#[derive(Serialize, ToSchema)]
pub struct SeatChange {
    #[schema(example = "F7")]
    pub seat: String,
    /// `available`, `held` or `sold`.
    #[schema(example = "held")]
    pub status: &'static str,
    /// The showtime's event sequence that changed it.
    pub sequence: usize,
}

/// The `cancelled` event.
#[derive(Serialize, ToSchema)]
pub struct ShowtimeCancelledChange {
    pub showtime_id: Uuid,
    pub sequence: usize,
}

/// The live seat map as Server-Sent Events (`text/event-stream`). First a `snapshot` event
/// (`SeatSnapshot`: the whole seat map), then a `seat` event (`SeatChange`) for each seat
/// whose status changes, within a second of the change, and a `cancelled` event
/// (`ShowtimeCancelledChange`) if the showtime is cancelled. Each event's `id` is the
/// showtime's event sequence. A comment line (`: heartbeat`) every 15 seconds keeps the
/// connection open. A client that falls far behind is sent a fresh `snapshot`. Public: no
/// token is needed and no seat is marked `mine`.
#[utoipa::path(get, path = "/v1/showtimes/{id}/seats/stream", tag = "booking",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "an endless event stream: `snapshot`, then `seat` and `cancelled` events",
            content_type = "text/event-stream", body = SeatSnapshot),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn seat_stream(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let (first, changes) = watch(&state, id).await?;
    let stream = events(state, id, first, changes);
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        // Tells nginx-like proxies not to buffer the stream.
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    Ok((
        headers,
        Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")),
    ))
}

type Changes = Subscription;

/// The snapshot event and the changes after it, or 404.
async fn watch(state: &AppState, id: Uuid) -> Result<(Event, Changes), ApiError> {
    let snapshot = |showtime: &_, sequence| {
        let map = SeatMap::of_state(showtime, id, chrono::Utc::now());
        event("snapshot", sequence, &SeatSnapshot { sequence, map })
    };
    state
        .live
        .watch(&state.writers, id, snapshot)
        .await?
        .ok_or(ApiError::NotFound)
}

fn event(name: &str, sequence: usize, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .id(sequence.to_string())
        .json_data(data)
        .expect("plain structs serialize")
}

fn events_of(change: &Change, id: Uuid) -> Vec<Event> {
    match change {
        Change::Seats { sequence, seats } => seats
            .iter()
            .map(|(seat, status)| {
                let data = SeatChange {
                    seat: seat.clone(),
                    status,
                    sequence: *sequence,
                };
                event("seat", *sequence, &data)
            })
            .collect(),
        Change::Cancelled { sequence } => {
            let data = ShowtimeCancelledChange {
                showtime_id: id,
                sequence: *sequence,
            };
            vec![event("cancelled", *sequence, &data)]
        }
    }
}

/// The stream of one connection; it ends when the process shuts down.
fn events(
    state: AppState,
    id: Uuid,
    first: Event,
    changes: Changes,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let live: LiveSeats = state.live.clone();
    let queued = VecDeque::from([first]);
    futures::stream::unfold(
        (state, queued, changes),
        move |(state, mut queued, mut changes)| {
            let live = live.clone();
            async move {
                loop {
                    if let Some(next) = queued.pop_front() {
                        return Some((Ok(next), (state, queued, changes)));
                    }
                    let received = tokio::select! {
                        r = changes.recv() => r,
                        _ = live.closed() => return None,
                    };
                    match received {
                        Ok(change) => queued.extend(events_of(&change, id)),
                        // Fell behind: start over from a fresh snapshot.
                        Err(RecvError::Lagged(_)) => {
                            let (first, fresh) = watch(&state, id).await.ok()?;
                            queued.push_back(first);
                            changes = fresh;
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        },
    )
}
