//! Showtimes: scheduling and cancelling (admin), reading one, and its seat map.

use super::dto::{money_of, Errors, MoneyDto};
use super::movies;
use crate::auth::{Admin, MaybeUser};
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use marquee_domain::seating::SeatKind;
use marquee_domain::showtime::{
    Cancel, Schedule, SeatState, Showtime as ShowtimeAggregate, ShowtimeCommand, ShowtimeDetails,
    ShowtimeEvent,
};
use marquee_domain::theater::{Slot, Theater, TheaterCommand, CLEANING_GAP_MINUTES};
use marquee_domain::{Money, MovieId, ScreenId, ShowtimeId, TheaterId};
use marquee_event_store::append::{to_new_events, NewEvent};
use marquee_event_store::event_store::now;
use marquee_event_store::metadata::Metadata;
use marquee_projections::seat_maps;
use marquee_projections::showtimes::{self as read, ShowtimeRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, cancel))
        .routes(routes!(seat_map))
}

/// How far ahead a showtime may be scheduled.
const MAX_DAYS_AHEAD: i64 = 730;

/// A showtime to schedule.
#[derive(Deserialize, ToSchema)]
pub struct NewShowtime {
    pub movie_id: Uuid,
    pub theater_id: Uuid,
    pub screen_id: Uuid,
    pub starts_at: DateTime<Utc>,
    #[schema(example = "IMAX 3D")]
    pub format: Option<String>,
    /// Seat kind (`standard`, `premium`, `wheelchair`, `companion`) to price. Every kind the
    /// screen has must be priced, all in one currency.
    #[schema(example = json!({"standard": {"amount": 1250, "currency": "USD"}}))]
    pub prices: BTreeMap<String, MoneyDto>,
}

/// A showtime.
#[derive(Serialize, ToSchema)]
pub struct Showtime {
    pub id: Uuid,
    pub movie_id: Uuid,
    pub theater_id: Uuid,
    pub screen_id: Uuid,
    pub starts_at: DateTime<Utc>,
    /// When the movie ends (start plus runtime).
    pub ends_at: DateTime<Utc>,
    pub format: Option<String>,
    pub prices: BTreeMap<String, MoneyDto>,
    /// `scheduled` or `cancelled`.
    pub status: &'static str,
    pub capacity: usize,
    pub seats_available: usize,
}

impl From<ShowtimeRow> for Showtime {
    fn from(r: ShowtimeRow) -> Self {
        let prices = r
            .prices
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), money_of(v))).collect())
            .unwrap_or_default();
        Self {
            id: r.id,
            movie_id: r.movie_id,
            theater_id: r.theater_id,
            screen_id: r.screen_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            format: r.format,
            prices,
            status: if r.cancelled {
                "cancelled"
            } else {
                "scheduled"
            },
            capacity: r.capacity.max(0) as usize,
            seats_available: r.seats_available.max(0) as usize,
        }
    }
}

impl Showtime {
    fn from_state(s: &ShowtimeAggregate, at: DateTime<Utc>) -> Option<Self> {
        let (id, d) = (s.id?, s.details.as_ref()?);
        let layout = s.layout();
        Some(Self {
            id: id.0,
            movie_id: d.movie_id.0,
            theater_id: d.theater_id.0,
            screen_id: d.screen_id.0,
            starts_at: d.starts_at,
            ends_at: d.ends_at,
            format: d.format.clone(),
            prices: d
                .prices
                .iter()
                .map(|(k, m)| (k.as_str().to_owned(), m.into()))
                .collect(),
            status: if s.cancelled_at.is_some() {
                "cancelled"
            } else {
                "scheduled"
            },
            capacity: layout.capacity(),
            seats_available: layout
                .seats()
                .filter(|seat| s.seat_state(&seat.label, at) == SeatState::Available)
                .count(),
        })
    }
}

fn parse_kind(name: &str) -> Option<SeatKind> {
    SeatKind::ALL.into_iter().find(|k| k.as_str() == name)
}

struct Request {
    movie_id: MovieId,
    theater_id: TheaterId,
    screen_id: ScreenId,
    starts_at: DateTime<Utc>,
    format: Option<String>,
    prices: BTreeMap<SeatKind, Money>,
}

fn parse_new(body: NewShowtime, at: DateTime<Utc>) -> Result<Request, ApiError> {
    let mut errors = Errors::default();
    if body.starts_at <= at {
        errors.add("starts_at", "must be in the future");
    } else if body.starts_at > at + TimeDelta::days(MAX_DAYS_AHEAD) {
        errors.add("starts_at", format!("must be within {MAX_DAYS_AHEAD} days"));
    }
    let format = errors.optional_text("format", body.format.as_deref(), 50);
    let mut prices = BTreeMap::new();
    for (name, money) in &body.prices {
        let field = format!("prices.{name}");
        match parse_kind(name) {
            None => errors.add(&field, "use standard, premium, wheelchair or companion"),
            Some(kind) => {
                if let Some(m) = money.parse(&field, &mut errors) {
                    prices.insert(kind, m);
                }
            }
        }
    }
    errors.finish()?;
    Ok(Request {
        movie_id: MovieId(body.movie_id),
        theater_id: TheaterId(body.theater_id),
        screen_id: ScreenId(body.screen_id),
        starts_at: body.starts_at,
        format,
        prices,
    })
}

/// Schedule a showtime (admin). Books the screen on the theater and creates the showtime in
/// one transaction, so neither can exist without the other.
#[utoipa::path(post, path = "/v1/showtimes", tag = "catalog", security(("bearer" = [])),
    request_body = NewShowtime,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = Showtime), (status = 403, description = "not an admin", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown movie, theater or screen", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "screen-busy", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppJson(body): AppJson<NewShowtime>,
) -> Result<(StatusCode, axum::Json<Showtime>), ApiError> {
    let at = now();
    let req = parse_new(body, at)?;
    let movie = movies::load(&state, req.movie_id.0).await?;
    let runtime = movie.details.as_ref().map_or(0, |d| d.runtime_minutes);
    let meta = admin.metadata().named("ScheduleShowtime");
    let id = ShowtimeId(Uuid::now_v7());
    let ends_at = req.starts_at + TimeDelta::minutes(i64::from(runtime));
    // The theater's slot and the new showtime, in one transaction.
    let scheduled = state
        .store
        .append_deciding::<Theater, _, ApiError>(&req.theater_id.to_string(), |theater, version| {
            schedule_on(&req, theater, version, (id, ends_at, at), &meta)
        })
        .await?
        .ok_or_else(|| ApiError::Unavailable("the theater's schedule keeps changing".into()))?;
    let mut showtime = ShowtimeAggregate::default();
    for e in scheduled {
        cqrs_es::Aggregate::apply(&mut showtime, e);
    }
    let body = Showtime::from_state(&showtime, at).expect("just scheduled");
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// What scheduling showtime `id` (from `starts_at` to `ends_at`, decided at `at`) appends on
/// `theater` at `version`: the screen's booked slot and the new showtime, with the showtime's
/// events.
fn schedule_on(
    req: &Request,
    theater: &Theater,
    version: usize,
    (id, ends_at, at): (ShowtimeId, DateTime<Utc>, DateTime<Utc>),
    meta: &Metadata,
) -> Result<(Vec<NewEvent>, Vec<ShowtimeEvent>), ApiError> {
    let screen = theater
        .exists()
        .then(|| theater.screen(req.screen_id))
        .flatten()
        .ok_or(ApiError::NotFound)?;
    let slot = Slot {
        showtime_id: id,
        screen_id: req.screen_id,
        starts_at: req.starts_at,
        busy_until: ends_at + TimeDelta::minutes(CLEANING_GAP_MINUTES),
    };
    let booked = theater.decide(TheaterCommand::BookSlot(slot))?;
    let details = ShowtimeDetails {
        movie_id: req.movie_id,
        theater_id: req.theater_id,
        screen_id: req.screen_id,
        starts_at: req.starts_at,
        ends_at,
        format: req.format.clone(),
        layout: screen.layout.clone(),
        prices: req.prices.clone(),
    };
    let scheduled = ShowtimeAggregate::default().decide(ShowtimeCommand::Schedule(Schedule {
        id,
        details,
        now: at,
    }))?;
    let mut rows = to_new_events::<Theater>(&req.theater_id.to_string(), version, &booked, meta);
    rows.extend(to_new_events::<ShowtimeAggregate>(
        &id.to_string(),
        0,
        &scheduled,
        meta,
    ));
    Ok((rows, scheduled))
}

/// Reads from the committed state of a showtime without copying it (a hot showtime's state
/// holds its open holds, tickets, payments and a row per customer), or 404. A closed or unknown showtime is read from the store
/// without starting its writer (see [`marquee_event_store::writer::Writers::read`]).
pub async fn read_state<T>(
    state: &AppState,
    id: Uuid,
    read: impl FnOnce(&ShowtimeAggregate) -> T,
) -> Result<T, ApiError> {
    let shared = state
        .writers
        .read(ShowtimeId(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    let committed = shared.read().expect("lock poisoned");
    Ok(read(&committed.showtime))
}

/// A showtime.
#[utoipa::path(get, path = "/v1/showtimes/{id}", tag = "catalog", params(("id" = Uuid, Path)),
    responses((status = 200, body = Showtime), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<Showtime>, ApiError> {
    if let Some(row) = read::get(&state.pool, id).await? {
        return Ok(axum::Json(row.into()));
    }
    // Not projected yet (just scheduled): answer from the showtime's writer.
    let showtime = read_state(&state, id, |s| Showtime::from_state(s, now())).await?;
    Ok(axum::Json(showtime.ok_or(ApiError::NotFound)?))
}

/// Cancel a showtime (admin): its holds are released and its tickets refunded.
#[utoipa::path(delete, path = "/v1/showtimes/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "cancelled (again: nothing changes)"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn cancel(
    State(state): State<AppState>,
    Admin(admin): Admin,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let meta = admin.metadata();
    let showtime = ShowtimeId(id);
    let events = state
        .writers
        .execute(
            showtime,
            ShowtimeCommand::Cancel(Cancel { now: now() }),
            meta.clone(),
        )
        .await?;
    // Free the screen. Done after the cancellation is recorded and again on every repeated
    // DELETE, so a crash in between is repaired by retrying the request.
    let theater_id = read_state(&state, id, |s| s.details.as_ref().map(|d| d.theater_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    state
        .store
        .execute::<Theater>(
            &theater_id.to_string(),
            TheaterCommand::ReleaseSlot {
                showtime_id: showtime,
            },
            &meta,
        )
        .await??;
    // Refunds of sold tickets were queued with the events; the reconciler pays them.
    let refunds = events
        .iter()
        .filter(|e| matches!(e, ShowtimeEvent::TicketRefunded(_)))
        .count();
    tracing::info!(showtime = %id, refunds, "showtime cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// One seat on the map.
#[derive(Serialize, ToSchema)]
pub struct SeatDto {
    #[schema(example = "F7")]
    pub seat: String,
    /// `standard`, `premium`, `wheelchair` or `companion`.
    pub kind: String,
    /// `available`, `held` or `sold`.
    pub status: String,
    pub price: MoneyDto,
    /// Position in the row (gaps count), for drawing aisles.
    pub column: usize,
    /// Present and true on the caller's own held seats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mine: Option<bool>,
}

/// One row of the seat map.
#[derive(Serialize, ToSchema)]
pub struct RowDto {
    pub row: String,
    pub seats: Vec<SeatDto>,
}

/// The seat map of a showtime, front row first.
#[derive(Serialize, ToSchema)]
pub struct SeatMap {
    pub showtime_id: Uuid,
    pub available: usize,
    pub held: usize,
    pub sold: usize,
    pub rows: Vec<RowDto>,
}

impl SeatMap {
    fn empty(showtime_id: Uuid) -> Self {
        Self {
            showtime_id,
            available: 0,
            held: 0,
            sold: 0,
            rows: vec![],
        }
    }

    /// The seat map from the read model's seats, in row order.
    fn from_rows(id: Uuid, seats: Vec<seat_maps::SeatRow>) -> Self {
        let mut map = Self::empty(id);
        for seat in seats {
            match seat.status.as_str() {
                "sold" => map.sold += 1,
                "held" => map.held += 1,
                _ => map.available += 1,
            }
            if map.rows.last().is_none_or(|r| r.row != seat.row_name) {
                map.rows.push(RowDto {
                    row: seat.row_name.clone(),
                    seats: vec![],
                });
            }
            let row = map.rows.last_mut().expect("pushed above");
            row.seats.push(SeatDto {
                seat: seat.seat,
                kind: seat.kind,
                status: seat.status,
                price: money_of(&seat.price),
                column: seat.column_index.max(0) as usize,
                mine: seat.mine.then_some(true),
            });
        }
        map
    }

    /// The seat map from a showtime's state folded from events, at `at`.
    pub(super) fn of_state(s: &ShowtimeAggregate, id: Uuid, at: DateTime<Utc>) -> Self {
        let mut map = Self::empty(id);
        for row in s.layout().rows {
            let seats = row
                .seats
                .iter()
                .map(|seat| {
                    let status = match s.seat_state(&seat.label, at) {
                        SeatState::Available => {
                            map.available += 1;
                            "available"
                        }
                        SeatState::Held(_) => {
                            map.held += 1;
                            "held"
                        }
                        SeatState::Sold(_) => {
                            map.sold += 1;
                            "sold"
                        }
                    };
                    SeatDto {
                        seat: seat.label.to_string(),
                        kind: seat.kind.as_str().to_owned(),
                        status: status.to_owned(),
                        price: s
                            .price_of(seat.kind)
                            .map(MoneyDto::from)
                            .unwrap_or(MoneyDto {
                                amount: 0,
                                currency: String::new(),
                            }),
                        column: seat.column,
                        mine: None,
                    }
                })
                .collect();
            map.rows.push(RowDto {
                row: row.name,
                seats,
            });
        }
        map
    }
}

/// When to show the seat map at.
#[derive(Deserialize, IntoParams)]
pub struct SeatMapQuery {
    /// A past instant: the seat map as it stood then, rebuilt from the events (admin only).
    pub as_of: Option<DateTime<Utc>>,
}

/// The seat map: every seat with its kind, price and status. An expired hold shows its seats
/// as available at once. With a token, the caller's own held seats carry `"mine": true`.
/// With `as_of` (admin), the map as it stood at that instant, rebuilt from the event log.
#[utoipa::path(get, path = "/v1/showtimes/{id}/seats", tag = "booking",
    params(("id" = Uuid, Path), SeatMapQuery),
    responses((status = 200, body = SeatMap),
        (status = 401, description = "a bad token, or as_of without one", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "as_of without the admin role", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn seat_map(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<SeatMapQuery>,
) -> Result<axum::Json<SeatMap>, ApiError> {
    if let Some(at) = query.as_of {
        match &user {
            None => return Err(ApiError::Unauthenticated("as_of needs an admin token")),
            Some(u) if !u.is_admin() => return Err(ApiError::Forbidden),
            Some(_) => {}
        }
        let past = marquee_event_store::history::showtime_as_of(&state.pool, &id.to_string(), at)
            .await?
            .ok_or(ApiError::NotFound)?;
        return Ok(axum::Json(SeatMap::of_state(&past, id, at)));
    }
    let caller = user.map(|u| u.id.0);
    let seats = seat_maps::get(&state.pool, id, now(), caller)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(SeatMap::from_rows(id, seats)))
}

/// Which showtimes to list.
#[derive(Deserialize, IntoParams)]
pub struct ShowtimeQuery {
    pub movie_id: Option<Uuid>,
    pub theater_id: Option<Uuid>,
    /// A day (`YYYY-MM-DD`) in the theater's time zone; default: everything from now on.
    pub date: Option<chrono::NaiveDate>,
}

/// Showtimes found.
#[derive(Serialize, ToSchema)]
pub struct ShowtimeList {
    pub showtimes: Vec<Showtime>,
}

/// Showtimes by movie, theater and date, soonest first.
#[utoipa::path(get, path = "/v1/showtimes", tag = "browse", params(ShowtimeQuery),
    responses((status = 200, body = ShowtimeList),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<ShowtimeQuery>,
) -> Result<axum::Json<ShowtimeList>, ApiError> {
    let filter = read::Filter {
        movie_id: query.movie_id,
        theater_id: query.theater_id,
        date: query.date,
    };
    let rows = read::list(&state.pool, &filter, now()).await?;
    Ok(axum::Json(ShowtimeList {
        showtimes: rows.into_iter().map(Showtime::from).collect(),
    }))
}
