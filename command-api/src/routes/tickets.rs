//! Paying and tickets: `POST /v1/tickets`, `GET /v1/tickets/{id}`, `GET /v1/users/me/tickets`.
//!
//! Paying runs in three steps so that no charge is ever lost: pin the hold (`PaymentStarted`,
//! it can no longer expire under the customer), charge the card, then record the outcome:
//! tickets, a declined payment (the hold stays until it expires), or, when the hold is gone
//! after all, a refund that is recorded and sent back to the processor.

use super::dto::MoneyDto;
use super::reservations::showtime_of;
use super::showtimes::read_state;
use super::{movies, theaters};
use crate::auth::AuthUser;
use crate::error::{ApiError, AppJson, AppPath, AppQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use marquee_domain::showtime::{
    ShowtimeCommand, ShowtimeDetails, ShowtimeEvent, StartPayment, Ticket as DomainTicket,
    TicketStatus,
};
use marquee_domain::{PaymentId, ReservationId, ShowtimeId, TicketId};
use marquee_event_store::event_store::now;
use marquee_event_store::metadata::Metadata;
use marquee_payments::processor::{luhn_valid, Card, PaymentError};
use marquee_payments::reconcile;
use marquee_projections::tickets as read;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(buy))
        .routes(routes!(get_one))
        .routes(routes!(my_tickets))
}

/// Card details. Never stored: only the outcome of the charge is recorded.
#[derive(Deserialize, ToSchema)]
pub struct PaymentDto {
    /// Test numbers: `4242424242424242` succeeds, `4000000000000002` is declined
    /// (`card_declined`), `4000000000009995` is declined (`insufficient_funds`).
    #[schema(example = "4242424242424242")]
    pub card_number: String,
    /// `MM/YY`.
    #[schema(example = "12/30", pattern = "^(0[1-9]|1[0-2])/[0-9]{2}$")]
    pub expiry: Option<String>,
    #[schema(example = "123", pattern = "^[0-9]{3,4}$")]
    pub cvc: Option<String>,
}

/// Pay for a held reservation.
#[derive(Deserialize, ToSchema)]
pub struct Purchase {
    pub reservation_id: Uuid,
    pub payment: PaymentDto,
}

/// One ticket.
#[derive(Serialize, ToSchema)]
pub struct Ticket {
    pub id: Uuid,
    pub reservation_id: Uuid,
    pub showtime_id: Uuid,
    pub movie_title: String,
    pub theater_name: String,
    pub screen_name: String,
    pub starts_at: DateTime<Utc>,
    pub seat: String,
    pub price: MoneyDto,
    /// `valid` or `refunded`.
    pub status: &'static str,
    /// The code to show at the door.
    pub code: String,
}

/// The tickets of a paid reservation.
#[derive(Serialize, ToSchema)]
pub struct Purchased {
    pub reservation_id: Uuid,
    pub tickets: Vec<Ticket>,
}

/// A page of a customer's tickets.
#[derive(Serialize, ToSchema)]
pub struct TicketList {
    pub tickets: Vec<Ticket>,
    /// Present when there are more tickets: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

fn parse_card(p: &PaymentDto) -> Result<Card, ApiError> {
    let mut errors = super::dto::Errors::default();
    let number: String = p
        .card_number
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    if !(12..=19).contains(&number.len()) || !luhn_valid(&number) {
        errors.add("payment.card_number", "is not a valid card number");
    }
    if let Some(exp) = &p.expiry {
        let ok = exp.len() == 5
            && exp.as_bytes()[2] == b'/'
            && exp[..2].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
            && exp[3..].parse::<u8>().is_ok();
        if !ok {
            errors.add("payment.expiry", "use MM/YY");
        }
    }
    if let Some(cvc) = &p.cvc {
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            errors.add("payment.cvc", "must be 3 or 4 digits");
        }
    }
    errors.finish()?;
    Ok(Card { number })
}

/// Names printed on a ticket.
struct Names {
    movie_title: String,
    theater_name: String,
    screen_name: String,
}

async fn names(state: &AppState, d: &ShowtimeDetails) -> Result<Names, ApiError> {
    let movie = movies::load(state, d.movie_id.0).await?;
    let theater = theaters::load(state, d.theater_id.0).await?;
    Ok(Names {
        movie_title: movie.details.map(|m| m.title).unwrap_or_default(),
        theater_name: theater
            .details
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        screen_name: theater
            .screen(d.screen_id)
            .map(|s| s.name.clone())
            .unwrap_or_default(),
    })
}

fn ticket_dto(t: &DomainTicket, showtime: Uuid, d: &ShowtimeDetails, n: &Names) -> Ticket {
    Ticket {
        id: t.id.0,
        reservation_id: t.reservation_id.0,
        showtime_id: showtime,
        movie_title: n.movie_title.clone(),
        theater_name: n.theater_name.clone(),
        screen_name: n.screen_name.clone(),
        starts_at: d.starts_at,
        seat: t.seat.to_string(),
        price: (&t.price).into(),
        status: match t.status {
            TicketStatus::Valid => "valid",
            TicketStatus::Refunded => "refunded",
        },
        code: t.code.clone(),
    }
}

/// Pay for a held reservation and get one ticket per seat.
#[utoipa::path(post, path = "/v1/tickets", tag = "booking", security(("bearer" = [])),
    request_body = Purchase,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key never charges twice")),
    responses((status = 201, body = Purchased),
        (status = 402, description = "payment-declined, with reason; the hold stays", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown or someone else's reservation", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "already paid, or a payment is in progress", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "reservation-expired", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate-limited; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "payment-pending: the processor did not answer in time; the reservation stays `paying` until the outcome is reconciled (see Retry-After)", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn buy(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<Purchase>,
) -> Result<(StatusCode, axum::Json<Purchased>), ApiError> {
    let card = parse_card(&body.payment)?;
    let reservation = ReservationId(body.reservation_id);
    let showtime = showtime_of(&state, reservation.0, user.id).await?;
    let payment = PaymentId(Uuid::now_v7());
    let meta = user.metadata();
    let pin_for = TimeDelta::from_std(state.config.payment_pin).expect("pin time fits");
    let started = state
        .writers
        .execute(
            showtime,
            ShowtimeCommand::StartPayment(StartPayment {
                reservation_id: reservation,
                customer_id: user.id,
                payment_id: payment,
                pin_for,
                now: now(),
            }),
            meta.clone(),
        )
        .await
        .map_err(super::reservations::closed_if_unknown)?;
    let amount = started
        .iter()
        .find_map(|e| match e {
            ShowtimeEvent::PaymentStarted(p) => Some(p.amount.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("a started payment records PaymentStarted"))?;
    // Charge and settle in a task of its own: once the card may be charged, a client that
    // hangs up must not cut the flow short between the charge and recording its outcome.
    let task = tokio::spawn(charge_and_settle(
        state.clone(),
        showtime,
        reservation,
        payment,
        amount,
        card,
        meta,
    ));
    task.await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the payment task failed: {e}")))?
}

async fn charge_and_settle(
    state: AppState,
    showtime: ShowtimeId,
    reservation: ReservationId,
    payment: PaymentId,
    amount: marquee_domain::Money,
    card: Card,
    meta: Metadata,
) -> Result<(StatusCode, axum::Json<Purchased>), ApiError> {
    let timeout = state.config.payment_timeout;
    // From here on no reconciler settles the payment before our own timeout has passed; if one
    // already gave up on it as never sent, it must not be charged.
    if !marquee_event_store::due::mark_sending(&state.pool, payment, timeout).await? {
        return Err(ApiError::Conflict(
            "the payment was given up before the card was charged; nothing was charged, \
             pay again"
                .into(),
        ));
    }
    let charged = tokio::time::timeout(timeout, state.payments.charge(payment, &amount, &card))
        .await
        .unwrap_or_else(|_| Err(PaymentError::Unavailable("no answer in time".into())));
    match charged {
        Ok(()) => confirm(&state, showtime, reservation, payment, meta).await,
        Err(PaymentError::Declined(reason)) => {
            let retryable = PaymentError::Declined(reason.clone()).retryable();
            reconcile::record_failed(
                &state.writers,
                showtime,
                reservation,
                payment,
                &reason,
                retryable,
                meta,
            )
            .await?;
            Err(ApiError::PaymentDeclined(reason))
        }
        Err(PaymentError::Unavailable(cause)) => {
            // The card may or may not have been charged. Recording a failure could lose a
            // charge (and a retry would charge again); the payment stays open, pinning the
            // hold, until the reconciler has asked the processor and recorded the outcome.
            tracing::warn!(%payment, %reservation, error = %cause, "payment outcome unknown; the reconciler will settle it");
            Err(ApiError::PaymentPending(reconcile::settled_within(timeout)))
        }
    }
}

async fn confirm(
    state: &AppState,
    showtime: ShowtimeId,
    reservation: ReservationId,
    payment: PaymentId,
    meta: Metadata,
) -> Result<(StatusCode, axum::Json<Purchased>), ApiError> {
    let events =
        reconcile::record_charged(&state.writers, showtime, reservation, payment, meta).await?;
    let refunded = events
        .iter()
        .any(|e| matches!(e, ShowtimeEvent::PaymentRefunded { .. }));
    // Only what the answer needs: a hot showtime's state holds its open holds, tickets,
    // payments and a row per customer, and copying it all took a few percent of the engine's
    // CPU under load (when it still kept every hold).
    let (details, issued, hold_open) = read_state(state, showtime.0, |s| {
        let issued: Vec<DomainTicket> = s
            .tickets
            .values()
            .filter(|t| t.payment_id == payment)
            .cloned()
            .collect();
        let hold_open = s.holds.get(&reservation).is_some_and(|h| h.is_live(now()));
        (s.details.clone(), issued, hold_open)
    })
    .await?;
    if refunded && !hold_open {
        // The refund itself is queued with the event and paid by the reconciler.
        return Err(ApiError::ReservationExpired(
            "the hold ran out before the payment completed; the payment is refunded".into(),
        ));
    }
    if issued.is_empty() {
        // Recorded as failed before the processor's success came: refunded if it was charged
        // (`refunded`), and the hold still waits for a payment.
        return Err(ApiError::Conflict(
            "the payment was recorded as failed before the card was charged; any charge is \
             refunded, pay again"
                .into(),
        ));
    }
    let details = details.ok_or(ApiError::NotFound)?;
    let names = names(state, &details).await?;
    let tickets = issued
        .iter()
        .map(|t| ticket_dto(t, showtime.0, &details, &names))
        .collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(Purchased {
            reservation_id: reservation.0,
            tickets,
        }),
    ))
}

/// One of the caller's tickets.
#[utoipa::path(get, path = "/v1/tickets/{id}", tag = "booking", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Ticket),
        (status = 404, description = "unknown, or someone else's", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> Result<axum::Json<Ticket>, ApiError> {
    if let Some(t) = read::get(&state.pool, id).await? {
        return if t.customer_id == user.id.0 {
            Ok(axum::Json(t.into()))
        } else {
            Err(ApiError::NotFound)
        };
    }
    // Not projected yet (just bought): answer from the showtime's writer.
    let showtime = match state.store.ticket_owner(TicketId(id)).await? {
        Some(known) if known.customer == user.id => known.showtime.0,
        _ => return Err(ApiError::NotFound),
    };
    let (details, ticket) = read_state(&state, showtime, |s| {
        (s.details.clone(), s.tickets.get(&TicketId(id)).cloned())
    })
    .await?;
    let (Some(details), Some(ticket)) = (details, ticket) else {
        return Err(ApiError::NotFound);
    };
    let names = names(&state, &details).await?;
    Ok(axum::Json(ticket_dto(&ticket, showtime, &details, &names)))
}

/// Tickets in one page by default.
pub const DEFAULT_TICKET_PAGE: i64 = 50;
/// Most tickets in one page.
pub const MAX_TICKET_PAGE: i64 = 200;

/// Which of one's tickets to list.
#[derive(Deserialize, IntoParams)]
pub struct TicketFilter {
    /// `upcoming`, `past` or `all` (the default).
    pub status: Option<String>,
    /// Tickets per page; default 50, at most 200.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Where to go on from: the previous page's `next_after`, as it was (keep the same
    /// `status`). What is upcoming and what is past stays as it was on the first page.
    pub after: Option<String>,
}

/// The caller's tickets, upcoming first (soonest first), then past ones (latest first), a page
/// at a time: follow `next_after` until it is absent.
#[utoipa::path(get, path = "/v1/users/me/tickets", tag = "users", security(("bearer" = [])),
    params(TicketFilter),
    responses((status = 200, body = TicketList), (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation-failed: a bad status, limit or after", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn my_tickets(
    State(state): State<AppState>,
    user: AuthUser,
    AppQuery(filter): AppQuery<TicketFilter>,
) -> Result<axum::Json<TicketList>, ApiError> {
    let (upcoming, limit, after) = ticket_page(&filter)?;
    let (rows, next) = read::of_customer(
        &state.pool,
        user.id.0,
        upcoming,
        now(),
        after.as_ref(),
        limit,
    )
    .await?;
    Ok(axum::Json(TicketList {
        tickets: rows.into_iter().map(Ticket::from).collect(),
        next_after: next.map(|c| c.encode()),
    }))
}

/// The part of the listing asked for (`None`: both), the page size and where to go on from.
fn ticket_page(
    filter: &TicketFilter,
) -> Result<(Option<bool>, i64, Option<read::Cursor>), ApiError> {
    let mut errors = super::dto::Errors::default();
    let upcoming = match filter.status.as_deref().unwrap_or("all") {
        "upcoming" => Some(true),
        "past" => Some(false),
        "all" => None,
        _ => {
            errors.add("status", "use upcoming, past or all");
            None
        }
    };
    let limit = filter.limit.unwrap_or(DEFAULT_TICKET_PAGE);
    if !(1..=MAX_TICKET_PAGE).contains(&limit) {
        errors.add("limit", format!("must be 1 to {MAX_TICKET_PAGE}"));
    }
    let after = filter.after.as_deref().map(read::Cursor::decode);
    if after == Some(None) {
        errors.add("after", "use the next_after of a previous page, as it was");
    }
    errors.finish()?;
    Ok((upcoming, limit, after.flatten()))
}

impl From<read::TicketRow> for Ticket {
    fn from(t: read::TicketRow) -> Self {
        Self {
            id: t.id,
            reservation_id: t.reservation_id,
            showtime_id: t.showtime_id,
            movie_title: t.movie_title,
            theater_name: t.theater_name,
            screen_name: t.screen_name,
            starts_at: t.starts_at,
            seat: t.seat,
            price: super::dto::money_of(&t.price),
            status: if t.status == "refunded" {
                "refunded"
            } else {
                "valid"
            },
            code: t.code,
        }
    }
}
