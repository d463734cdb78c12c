//! Event history for analysts (admin): `GET /v1/events` and the history of one seat.

use crate::auth::Admin;
use crate::error::{ApiError, AppPath, AppQuery};
use crate::state::AppState;
use axum::extract::State;
use chrono::{DateTime, Utc};
use marquee_domain::showtime::ShowtimeEvent;
use marquee_domain::{ReservationId, SeatLabel, TicketId};
use marquee_event_store::envelope::Envelope;
use marquee_event_store::history::{self, Filter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(seat_history))
}

/// Most events in one page.
pub const MAX_PAGE: i64 = 1000;

/// Which events to list.
#[derive(Deserialize, IntoParams)]
pub struct EventQuery {
    /// Only events after this position (the previous page's `next_after`); default 0.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Events per page; default 100, at most 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `Theater`, `Movie` or `Showtime`.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// E.g. `SeatsHeld`; see docs/events.md for every type.
    pub event_type: Option<String>,
    /// Recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub to: Option<DateTime<Utc>>,
}

/// One event of the log.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// Global position: strictly increasing in commit order.
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The event's number within its aggregate, from 1.
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event's fields.
    pub payload: Value,
    /// `actor` (`user:<id>` or `timer`), `command`, `causation_id` and `correlation_id`.
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<Envelope> for Event {
    fn from(e: Envelope) -> Self {
        Self {
            payload: history::fields(&e),
            position: e.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `after` for the next page. Equal to `after` when there is nothing newer yet.
    pub next_after: i64,
}

/// The event log in global commit order, paged by position, with filters (admin). A page
/// never skips an event that a later page would show, even when transactions commit late.
#[utoipa::path(get, path = "/v1/events", tag = "history", security(("bearer" = [])),
    params(EventQuery),
    responses((status = 200, body = EventPage),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    AppQuery(q): AppQuery<EventQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 {
        return Err(ApiError::field("after", "must not be negative"));
    }
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be 1 to {MAX_PAGE}")));
    }
    let filter = Filter {
        aggregate_type: q.aggregate_type,
        aggregate_id: q.aggregate_id,
        event_type: q.event_type,
        from: q.from,
        to: q.to,
    };
    let events = history::page(&state.pool, &filter, after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(axum::Json(EventPage {
        events: events.into_iter().map(Event::from).collect(),
        next_after,
    }))
}

/// One thing that happened to a seat.
#[derive(Serialize, ToSchema)]
pub struct SeatEvent {
    pub position: i64,
    pub at: DateTime<Utc>,
    pub event_type: String,
    /// `held`, `released`, `expired`, `payment_started`, `payment_failed`, `sold`,
    /// `payment_refunded`, `refunded` or `showtime_cancelled`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<Uuid>,
    /// Who caused it: `user:<id>`, `timer` or `system`. Never personal data.
    pub by: String,
}

/// A seat's history.
#[derive(Serialize, ToSchema)]
pub struct SeatHistory {
    pub showtime_id: Uuid,
    pub seat: String,
    pub history: Vec<SeatEvent>,
}

/// Every hold, release, expiry, payment, sale and refund of one seat, oldest first (admin).
#[utoipa::path(get, path = "/v1/showtimes/{id}/seats/{seat}/history", tag = "history",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("seat" = String, Path)),
    responses((status = 200, body = SeatHistory),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown showtime or seat", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn seat_history(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    AppPath((id, seat)): AppPath<(Uuid, String)>,
) -> Result<axum::Json<SeatHistory>, ApiError> {
    let label = SeatLabel::parse(&seat).map_err(|_| ApiError::NotFound)?;
    let events = history::showtime_events(&state.pool, &id.to_string(), None).await?;
    let exists = events.iter().any(|(_, e)| match e {
        ShowtimeEvent::ShowtimeScheduled { details, .. } => {
            marquee_domain::SeatLayout::parse(&details.layout)
                .is_ok_and(|l| l.seats().any(|s| s.label == label))
        }
        _ => false,
    });
    if !exists {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(SeatHistory {
        showtime_id: id,
        seat: label.to_string(),
        history: story(&label, &events),
    }))
}

/// Walks a showtime's events and keeps those about `seat`.
fn story(seat: &SeatLabel, events: &[(Envelope, ShowtimeEvent)]) -> Vec<SeatEvent> {
    let mut holds_seat: HashMap<ReservationId, bool> = HashMap::new();
    let mut seat_ticket: Option<TicketId> = None;
    let mut out = Vec::new();
    for (row, event) in events {
        let touches = |r: &ReservationId| holds_seat.get(r).copied().unwrap_or(false);
        let (action, reservation, ticket) = match event {
            ShowtimeEvent::SeatsHeld(h) => {
                let mine = h.seats.contains(seat);
                holds_seat.insert(h.reservation_id, mine);
                if !mine {
                    continue;
                }
                ("held", Some(h.reservation_id), None)
            }
            ShowtimeEvent::HoldReleased {
                reservation_id: r, ..
            } if touches(r) => ("released", Some(*r), None),
            ShowtimeEvent::HoldExpired {
                reservation_id: r, ..
            } if touches(r) => ("expired", Some(*r), None),
            ShowtimeEvent::PaymentStarted(p) if touches(&p.reservation_id) => {
                ("payment_started", Some(p.reservation_id), None)
            }
            ShowtimeEvent::PaymentFailed(p) if touches(&p.reservation_id) => {
                ("payment_failed", Some(p.reservation_id), None)
            }
            ShowtimeEvent::PaymentRefunded {
                reservation_id: r, ..
            } if touches(r) => ("payment_refunded", Some(*r), None),
            ShowtimeEvent::TicketsIssued(t) => {
                let Some(issued) = t.tickets.iter().find(|i| &i.seat == seat) else {
                    continue;
                };
                seat_ticket = Some(issued.ticket_id);
                ("sold", Some(t.reservation_id), Some(issued.ticket_id))
            }
            ShowtimeEvent::TicketRefunded(r) if seat_ticket == Some(r.ticket_id) => {
                ("refunded", Some(r.reservation_id), Some(r.ticket_id))
            }
            ShowtimeEvent::ShowtimeCancelled { .. } => ("showtime_cancelled", None, None),
            _ => continue,
        };
        out.push(SeatEvent {
            position: row.position,
            at: row.recorded_at,
            event_type: row.event_type.clone(),
            action,
            reservation_id: reservation.map(|r| r.0),
            ticket_id: ticket.map(|t| t.0),
            by: row.metadata["actor"]
                .as_str()
                .unwrap_or("system")
                .to_owned(),
        });
    }
    out
}
