//! Holds: `POST /v1/reservations`, `GET` and `DELETE /v1/reservations/{id}`.

use super::dto::MoneyDto;
use crate::auth::AuthUser;
use crate::error::{ApiError, AppJson, AppPath};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use marquee_domain::showtime::{
    Hold, HoldSeats, ReleaseHold, ShowtimeCommand, ShowtimeError, MAX_SEATS_PER_HOLD,
};
use marquee_domain::{ReservationId, SeatLabel, ShowtimeId, UserId};
use marquee_event_store::event_store::now;
use marquee_event_store::writer::WriteError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(get_one, release))
}

/// Seats to hold.
#[derive(Deserialize, ToSchema)]
pub struct NewReservation {
    pub showtime_id: Uuid,
    /// 1 to 10 distinct seat labels.
    #[schema(example = json!(["F7", "F8"]), min_items = 1, max_items = 10)]
    pub seats: Vec<String>,
}

/// A hold on seats, and later their purchase.
#[derive(Serialize, ToSchema)]
pub struct Reservation {
    pub id: Uuid,
    pub showtime_id: Uuid,
    pub seats: Vec<String>,
    /// `held`, `paying`, `confirmed`, `expired` or `released`.
    pub status: String,
    pub expires_at: DateTime<Utc>,
    /// Seconds left to pay; 0 once the hold is no longer waiting for payment.
    pub expires_in_seconds: i64,
    pub total: MoneyDto,
}

impl Reservation {
    pub fn from_hold(h: &Hold, showtime: ShowtimeId, at: DateTime<Utc>) -> Self {
        let status = h.status_at(at);
        let left = (h.expires_at - at).num_seconds().max(0);
        let status_name = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            id: h.id.0,
            showtime_id: showtime.0,
            seats: h.seats.iter().map(ToString::to_string).collect(),
            expires_in_seconds: if status_name == "held" { left } else { 0 },
            status: status_name,
            expires_at: h.expires_at,
            total: (&h.total).into(),
        }
    }
}

fn parse_seats(raw: &[String]) -> Result<Vec<SeatLabel>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_SEATS_PER_HOLD {
        return Err(ApiError::field(
            "seats",
            format!("choose 1 to {MAX_SEATS_PER_HOLD} seats"),
        ));
    }
    let mut errors = Vec::new();
    let mut seats = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match SeatLabel::parse(s.trim()) {
            Ok(l) => seats.push(l),
            Err(e) => errors.push(crate::error::FieldError::new(
                format!("seats[{i}]"),
                e.to_string(),
            )),
        }
    }
    if errors.is_empty() {
        Ok(seats)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Hold seats for [`crate::config::Config::hold_for`], all or nothing. Releases the caller's
/// earlier unpaid hold on the same showtime. Holding again does not extend the clock: a hold
/// placed while the caller's previous one is live, or within
/// [`crate::config::Config::hold_cooldown`] after it ended, expires when the first hold of
/// that row would have; once that is past, the caller waits out the cooldown.
#[utoipa::path(post, path = "/v1/reservations", tag = "booking", security(("bearer" = [])),
    request_body = NewReservation,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = Reservation),
        (status = 404, description = "unknown showtime", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "seats-unavailable, with the taken seats", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation-failed or showtime-closed", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate-limited, or hold-cooldown: the caller's back-to-back holds on this showtime used up their time (see retry_at); retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<NewReservation>,
) -> Result<(StatusCode, axum::Json<Reservation>), ApiError> {
    let seats = parse_seats(&body.seats)?;
    let showtime = ShowtimeId(body.showtime_id);
    let reservation = ReservationId(Uuid::now_v7());
    let hold_for = TimeDelta::from_std(state.config.hold_for).expect("hold time fits");
    let cooldown = TimeDelta::from_std(state.config.hold_cooldown).expect("cooldown fits");
    let command = ShowtimeCommand::HoldSeats(HoldSeats {
        reservation_id: reservation,
        customer_id: user.id,
        seats,
        hold_for,
        cooldown,
        now: now(),
    });
    let events = state
        .writers
        .execute(showtime, command, user.metadata())
        .await?;
    let held = events
        .iter()
        .find_map(|e| match e {
            marquee_domain::showtime::ShowtimeEvent::SeatsHeld(h) => Some(h),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("a successful hold records SeatsHeld"))?;
    let hold = Hold {
        id: reservation,
        customer_id: user.id,
        seats: held.seats.clone(),
        total: held.total.clone(),
        held_at: held.held_at,
        expires_at: held.expires_at,
        status: marquee_domain::showtime::HoldStatus::Held,
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(Reservation::from_hold(&hold, showtime, held.held_at)),
    ))
}

/// The showtime a reservation of `owner` belongs to, or 404 (also for someone else's).
/// A hold recorded by this process is known without asking the database.
pub async fn showtime_of(
    state: &AppState,
    id: Uuid,
    owner: UserId,
) -> Result<ShowtimeId, ApiError> {
    match state.writers.reservation_owner(ReservationId(id)).await? {
        Some(known) if known.customer == owner => Ok(known.showtime),
        _ => Err(ApiError::NotFound),
    }
}

/// One of the caller's reservations.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "booking", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Reservation),
        (status = 404, description = "unknown, or someone else's", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<Reservation>, ApiError> {
    let showtime = showtime_of(&state, id, user.id).await?;
    let kept = super::showtimes::read_state(&state, showtime.0, |s| {
        let at = s.effective_now(now());
        s.holds
            .get(&ReservationId(id))
            .map(|hold| Reservation::from_hold(hold, showtime, at))
    })
    .await?;
    if let Some(reservation) = kept {
        return Ok(axum::Json(reservation));
    }
    // Released or run out: the showtime no longer keeps it; its events tell it.
    let events = state
        .store
        .reservation_events(showtime, ReservationId(id))
        .await?;
    let hold = Hold::replay(events).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(Reservation::from_hold(&hold, showtime, now())))
}

/// Maps a refused command on a reservation its caller owns (its lookup row says so): a hold
/// the showtime does not keep was released or ran out.
pub fn closed_if_unknown(e: WriteError) -> WriteError {
    match e {
        WriteError::Rejected(ShowtimeError::ReservationNotFound) => {
            WriteError::Rejected(ShowtimeError::ReservationExpired)
        }
        e => e,
    }
}

/// Give up a hold; its seats are free at once. Releasing an expired or released hold is fine.
#[utoipa::path(delete, path = "/v1/reservations/{id}", tag = "booking", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "released"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "paid or being paid", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn release(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let showtime = showtime_of(&state, id, user.id).await?;
    let command = ShowtimeCommand::ReleaseHold(ReleaseHold {
        reservation_id: ReservationId(id),
        customer_id: user.id,
        now: now(),
    });
    match state
        .writers
        .execute(showtime, command, user.metadata())
        .await
        .map_err(closed_if_unknown)
    {
        // Released or run out already (and no longer kept): the seats are free.
        Ok(_) | Err(WriteError::Rejected(ShowtimeError::ReservationExpired)) => {
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(e.into()),
    }
}
