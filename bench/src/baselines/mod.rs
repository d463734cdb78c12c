//! The baselines the engine is measured against, served behind the engine's own HTTP API.
//!
//! A baseline answers the three booking calls the load generator makes (`POST
//! /v1/reservations`, `DELETE /v1/reservations/{id}`, `POST /v1/tickets`) from its own seat
//! store, with the engine's status codes and problem+json bodies. Every other path (accounts,
//! tokens, the catalog) falls through to the engine's router on the same database, so one load
//! generator drives every design and customers' bearer tokens are checked with the same keys.
//!
//! - [`sql`]: N2, seat rows locked with `SELECT ... FOR UPDATE`, one transaction per command.
//! - [`redis`]: R, the seed design's Redis seat locks, all-or-nothing in one Lua script.
//!
//! Each store also keeps an append-only history of the domain events its decisions amount to,
//! written atomically with the decision, so the same auditor checks baselines and engine.

pub mod redis;
pub mod sql;

use async_trait::async_trait;
use axum::extract::{FromRequestParts, State};
use axum::http::{request::Parts, StatusCode};
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use marquee_api::auth::{bearer, TokenKeys};
use marquee_api::error::{ApiError, AppJson, AppPath};
use marquee_api::routes::reservations::{NewReservation, Reservation};
use marquee_api::routes::tickets::Purchase;
use marquee_api::state::AppState;
use marquee_domain::showtime::{Hold, HoldStatus, IssuedTicket, ShowtimeEvent};
use marquee_domain::{Money, ReservationId, SeatLabel, ShowtimeId, UserId};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// How long a baseline's hold lasts, as the engine's is configured in the benchmark.
pub const HOLD_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// How long a payment pins a hold. Baselines charge and confirm in one step, so the pin only
/// shows in the history (`PaymentStarted.pinned_until`), as the engine records it.
pub const PIN_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// The test card that succeeds (see API.md); baselines decline every other card.
const GOOD_CARD: &str = "4242424242424242";

/// A successful hold.
pub struct Held {
    pub reservation_id: ReservationId,
    pub seats: Vec<SeatLabel>,
    pub total: Money,
    pub held_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A seat store decides the booking commands and keeps their history.
#[async_trait]
pub trait SeatStore: Send + Sync + 'static {
    /// Creates the seats of the showtimes (every seat priced `price`).
    async fn prepare(
        &self,
        showtimes: &[ShowtimeId],
        seats: &[SeatLabel],
        price: &Money,
    ) -> anyhow::Result<()>;
    /// Holds `seats` all or nothing, replacing the customer's earlier unpaid hold.
    async fn hold(
        &self,
        showtime: ShowtimeId,
        customer: UserId,
        seats: Vec<SeatLabel>,
    ) -> Result<Held, ApiError>;
    /// Gives a hold up; releasing an expired or released hold is fine.
    async fn release(&self, reservation: ReservationId, customer: UserId) -> Result<(), ApiError>;
    /// Charges and confirms a live hold in one step; returns its tickets.
    async fn pay(
        &self,
        reservation: ReservationId,
        customer: UserId,
    ) -> Result<Vec<IssuedTicket>, ApiError>;
    /// The showtime's history, in the order the auditor must read it.
    async fn history(&self, showtime: ShowtimeId) -> anyhow::Result<Vec<ShowtimeEvent>>;
}

#[derive(Clone)]
struct Baseline {
    store: Arc<dyn SeatStore>,
    keys: Arc<TokenKeys>,
}

/// The HTTP API with the booking calls answered by `store` and everything else by the engine.
pub fn router(store: Arc<dyn SeatStore>, engine: AppState) -> Router {
    let keys = engine.keys.clone();
    let booking = Router::new()
        .route("/v1/reservations", post(hold))
        .route("/v1/reservations/{id}", delete(release))
        .route("/v1/tickets", post(pay))
        .with_state(Baseline { store, keys })
        .fallback_service(marquee_api::app::routes().with_state(engine.clone()));
    // Behind the engine's own middleware, so a request costs every design the same outside
    // its booking logic.
    marquee_api::app::with_middleware(booking, engine)
}

/// The caller, from a bearer token signed with the engine's keys.
struct Customer(UserId);

impl FromRequestParts<Baseline> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Baseline) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthenticated(
            "send Authorization: Bearer <token>",
        ))?;
        Ok(Self(state.keys.verify(token)?.id))
    }
}

async fn hold(
    State(state): State<Baseline>,
    Customer(customer): Customer,
    AppJson(body): AppJson<NewReservation>,
) -> Result<(StatusCode, Json<Reservation>), ApiError> {
    let seats = seat_choice(&body.seats)?;
    let showtime = ShowtimeId(body.showtime_id);
    let held = state.store.hold(showtime, customer, seats).await?;
    let hold = Hold {
        id: held.reservation_id,
        customer_id: customer,
        seats: held.seats,
        total: held.total,
        held_at: held.held_at,
        expires_at: held.expires_at,
        status: HoldStatus::Held,
    };
    let body = Reservation::from_hold(&hold, showtime, held.held_at);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn release(
    State(state): State<Baseline>,
    Customer(customer): Customer,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.store.release(ReservationId(id), customer).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pay(
    State(state): State<Baseline>,
    Customer(customer): Customer,
    AppJson(body): AppJson<Purchase>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.payment.card_number != GOOD_CARD {
        return Err(ApiError::PaymentDeclined("card_declined".into()));
    }
    let tickets = state
        .store
        .pay(ReservationId(body.reservation_id), customer)
        .await?;
    // The fields a client needs to find its tickets; the engine's ticket also carries the
    // movie, theater and screen names from the catalog, which the load generator never reads.
    let tickets: Vec<Value> = tickets
        .iter()
        .map(|t| json!({"id": t.ticket_id, "seat": t.seat, "code": t.code, "status": "valid"}))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"reservation_id": body.reservation_id, "tickets": tickets})),
    ))
}

/// 1 to 10 distinct, well-formed seat labels, as the engine checks them.
fn seat_choice(raw: &[String]) -> Result<Vec<SeatLabel>, ApiError> {
    if raw.is_empty() || raw.len() > marquee_domain::showtime::MAX_SEATS_PER_HOLD {
        return Err(ApiError::field("seats", "choose 1 to 10 seats"));
    }
    let seats = raw
        .iter()
        .map(|s| SeatLabel::parse(s.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::field("seats", e.to_string()))?;
    let mut seen = HashSet::new();
    if seats.iter().any(|s| !seen.insert(s)) {
        return Err(ApiError::field("seats", "a seat is listed twice"));
    }
    Ok(seats)
}

/// The tickets of a paid hold, one per seat, each priced `price`.
fn tickets_for(seats: &[SeatLabel], price: &Money) -> Vec<IssuedTicket> {
    seats
        .iter()
        .map(|seat| IssuedTicket {
            ticket_id: Uuid::now_v7().into(),
            seat: seat.clone(),
            price: price.clone(),
            code: ticket_code(),
        })
        .collect()
}

/// A code to show at the door: ten characters of a random UUID.
fn ticket_code() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_uppercase()
}

/// `price` times the number of seats.
fn total_of(price: &Money, seats: usize) -> Money {
    Money::new(price.amount * seats as i64, price.currency.clone())
        .expect("at most ten seats of a valid price")
}

/// The names of seats, for a `seats-unavailable` answer.
fn labels(seats: &[SeatLabel]) -> Vec<String> {
    seats.iter().map(ToString::to_string).collect()
}
