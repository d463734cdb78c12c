//! The one error type of the HTTP API, and its problem+json (RFC 9457) rendering.
//!
//! Every 4xx/5xx leaves through [`ApiError`]: one `status()` match, one `IntoResponse`. Axum's
//! own rejections (bad JSON, wrong content type, bad path) are turned into it by the
//! extractors [`AppJson`], [`AppPath`] and [`AppQuery`]; the domain's broken rules and the
//! store's and writers' refusals by the `From` impls here, so a route only writes `?`.
//! Internal errors are logged once, with
//! their cause chain, by the metrics middleware (see [`log_internal_error`]) and never reach
//! the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use marquee_domain::movie::MovieError;
use marquee_domain::showtime::ShowtimeError;
use marquee_domain::theater::TheaterError;
use marquee_event_store::event_store::now;
use marquee_event_store::writer::WriteError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path such as `screens[0].layout[2]`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every error the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("this needs the admin role")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The request's body did not arrive within this long.
    #[error("the request body came too slowly")]
    RequestTimeout(std::time::Duration),
    #[error("some seats are held or sold")]
    SeatsUnavailable(Vec<String>),
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("the screen is busy at that time")]
    ScreenBusy(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ReservationExpired(String),
    #[error("the payment was declined")]
    PaymentDeclined(String),
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    ShowtimeClosed(String),
    #[error("too many requests")]
    RateLimited(u64),
    /// The caller's holds on a showtime used up their window; they may hold again at
    /// `retry_at`, `wait` from now.
    #[error("your holds on this showtime have used up their time")]
    HoldCooldown {
        retry_at: chrono::DateTime<chrono::Utc>,
        wait: std::time::Duration,
    },
    #[error("{0}")]
    Overloaded(String, u64),
    #[error("a service Marquee depends on is unavailable")]
    Unavailable(String),
    /// The card processor did not answer in time: the card may have been charged. The
    /// payment stays in progress until reconciled, at the latest after this long.
    #[error("the payment's outcome is not known yet")]
    PaymentPending(std::time::Duration),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// A response carries this when it answered an internal error, so the logging middleware can
/// log the cause without the client ever seeing it.
#[derive(Clone, Debug)]
struct InternalCause(String);

impl ApiError {
    /// A validation error on one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Malformed(_) => StatusCode::BAD_REQUEST,
            Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SeatsUnavailable(_) | EmailTaken | ScreenBusy(_) | Conflict(_) => StatusCode::CONFLICT,
            ReservationExpired(_) => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Validation(_) | ShowtimeClosed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited(_) | HoldCooldown { .. } => StatusCode::TOO_MANY_REQUESTS,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Overloaded(..) | Unavailable(_) | PaymentPending(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem type slug: `/problems/<slug>`.
    pub fn slug(&self) -> &'static str {
        use ApiError::*;
        match self {
            Malformed(_) => "malformed-request",
            Unauthenticated(_) => "unauthenticated",
            Forbidden => "forbidden",
            NotFound => "not-found",
            MethodNotAllowed => "method-not-allowed",
            UnsupportedMediaType(_) => "unsupported-media-type",
            PayloadTooLarge => "payload-too-large",
            RequestTimeout(_) => "request-timeout",
            SeatsUnavailable(_) => "seats-unavailable",
            EmailTaken => "email-taken",
            ScreenBusy(_) => "screen-busy",
            Conflict(_) => "conflict",
            ReservationExpired(_) => "reservation-expired",
            PaymentDeclined(_) => "payment-declined",
            Validation(_) => "validation-failed",
            ShowtimeClosed(_) => "showtime-closed",
            RateLimited(_) => "rate-limited",
            HoldCooldown { .. } => "hold-cooldown",
            Overloaded(..) => "overloaded",
            Unavailable(_) => "service-unavailable",
            PaymentPending(_) => "payment-pending",
            Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        use ApiError::*;
        match self {
            Malformed(_) => "Malformed request",
            Unauthenticated(_) => "Unauthenticated",
            Forbidden => "Forbidden",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            UnsupportedMediaType(_) => "Unsupported media type",
            PayloadTooLarge => "Payload too large",
            RequestTimeout(_) => "Request timeout",
            SeatsUnavailable(_) => "Seats unavailable",
            EmailTaken => "Email taken",
            ScreenBusy(_) => "Screen busy",
            Conflict(_) => "Conflict",
            ReservationExpired(_) => "Reservation expired",
            PaymentDeclined(_) => "Payment declined",
            Validation(_) => "Validation failed",
            ShowtimeClosed(_) => "Showtime closed",
            RateLimited(_) => "Rate limited",
            HoldCooldown { .. } => "Hold cooldown",
            Overloaded(..) => "Overloaded",
            Unavailable(_) => "Service unavailable",
            PaymentPending(_) => "Payment pending",
            Internal(_) => "Internal error",
        }
    }

    fn detail(&self) -> String {
        use ApiError::*;
        match self {
            // Never echo internal text: it can hold SQL, hostnames or worse.
            Internal(_) => "something went wrong on our side; it has been logged".into(),
            Unavailable(_) => "a service Marquee depends on is unavailable; retry shortly".into(),
            PaymentPending(within) => format!(
                "the card processor did not answer in time, so the card may have been charged; \
                 the reservation stays `paying` until Marquee has asked the processor (within \
                 {} s), then shows `confirmed` with tickets, or `held` again if nothing was \
                 charged; a charge for a hold that ran out is refunded",
                whole_seconds(*within)
            ),
            SeatsUnavailable(seats) => format!("already held or sold: {}", seats.join(", ")),
            ScreenBusy(d) => d.clone(),
            Validation(errors) if errors.len() == 1 => {
                format!("{}: {}", errors[0].field, errors[0].message)
            }
            Validation(_) => "several fields are not valid; see errors".into(),
            PaymentDeclined(reason) => format!("the card was declined ({reason})"),
            RequestTimeout(within) => format!(
                "the request's body did not arrive within {} s; nothing was done",
                whole_seconds(*within)
            ),
            HoldCooldown { retry_at, .. } => format!(
                "holding again does not extend a hold, and your holds on this showtime have used \
                 up their time; you can hold seats here again from {}",
                retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            other => other.to_string(),
        }
    }

    fn extensions(&self) -> Option<(&'static str, Value)> {
        match self {
            Self::SeatsUnavailable(seats) => Some(("seats", json!(seats))),
            Self::Validation(errors) => Some(("errors", json!(errors))),
            Self::PaymentDeclined(reason) => Some(("reason", json!(reason))),
            Self::HoldCooldown { retry_at, .. } => Some(("retry_at", json!(retry_at))),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited(s) | Self::Overloaded(_, s) => Some(*s),
            Self::Unavailable(_) => Some(1),
            Self::PaymentPending(within) | Self::HoldCooldown { wait: within, .. } => {
                Some(whole_seconds(*within))
            }
            _ => None,
        }
    }
}

/// The problem+json body, as documented in the OpenAPI.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// With `seats-unavailable`: the seats that are taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<String>>,
    /// With `validation-failed`: each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// With `payment-declined`: the processor's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `hold-cooldown`: when the caller may hold seats on the showtime again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({
            "type": format!("/problems/{}", self.slug()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        if let Some((name, value)) = self.extensions() {
            body[name] = value;
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        match self {
            Self::Internal(e) => {
                response
                    .extensions_mut()
                    .insert(InternalCause(format!("{e:#}")));
            }
            Self::Unavailable(cause) => {
                response.extensions_mut().insert(InternalCause(cause));
            }
            _ => {}
        }
        response
    }
}

/// Logs the cause of an internal error, if `response` answers one. Called once per request,
/// where it is answered (by the metrics middleware, which sees every response anyway).
pub fn log_internal_error(method: &Method, path: &str, response: &Response) {
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), cause, "request failed");
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if marquee_event_store::error::database_unavailable(&e) {
            Self::Unavailable(format!("database: {e}"))
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<marquee_event_store::error::StoreError> for ApiError {
    fn from(e: marquee_event_store::error::StoreError) -> Self {
        use marquee_event_store::error::StoreError;
        match e {
            StoreError::Unavailable(cause) => Self::Unavailable(cause),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<WriteError> for ApiError {
    /// A refused showtime command.
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Overloaded => Self::Overloaded(
                "this showtime is getting more requests than it can queue; retry shortly".into(),
                1,
            ),
            WriteError::Store(e) => e.into(),
            WriteError::Rejected(e) => e.into(),
        }
    }
}

impl From<ShowtimeError> for ApiError {
    /// A broken showtime rule.
    fn from(e: ShowtimeError) -> Self {
        use ShowtimeError::*;
        match e {
            NotFound | ReservationNotFound => Self::NotFound,
            ShowtimeClosed => {
                Self::ShowtimeClosed("the showtime is cancelled or has already started".into())
            }
            NoSeats | TooManySeats | DuplicateSeat(_) => Self::field("seats", e.to_string()),
            UnknownSeats(seats) => Self::field(
                "seats",
                format!(
                    "the screen has no seat {}",
                    seats
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            SeatsUnavailable(seats) => {
                Self::SeatsUnavailable(seats.iter().map(ToString::to_string).collect())
            }
            ReservationExpired => {
                Self::ReservationExpired("the hold has expired or was released".into())
            }
            DuplicateReservation | DuplicatePayment | PaymentInProgress | AlreadyPaid => {
                Self::Conflict(e.to_string())
            }
            HoldCooldown { retry_at } => Self::HoldCooldown {
                retry_at,
                // The writer may decide a little ahead of this process's clock; never promise
                // less.
                wait: (retry_at - now()).to_std().unwrap_or_default(),
            },
            UnpricedKind(kind) => Self::field(
                format!("prices.{}", kind.as_str()),
                "the screen has seats of this kind; give them a price",
            ),
            MixedCurrencies => Self::field("prices", "all prices must be in one currency"),
            other => Self::Internal(anyhow::anyhow!("unexpected showtime rule: {other}")),
        }
    }
}

impl From<TheaterError> for ApiError {
    /// A broken theater rule.
    fn from(e: TheaterError) -> Self {
        match e {
            TheaterError::NotFound | TheaterError::UnknownScreen(_) => Self::NotFound,
            TheaterError::AlreadyExists => Self::Conflict("the theater already exists".into()),
            TheaterError::ScreenCount => Self::field("screens", e.to_string()),
            TheaterError::BadLayout { index, source } => {
                let field = match source.row() {
                    Some(row) => format!("screens[{index}].layout[{row}]"),
                    None => format!("screens[{index}].layout"),
                };
                Self::field(field, source.to_string())
            }
            TheaterError::DuplicateScreenName(_) | TheaterError::DuplicateScreenId(_) => {
                Self::field("screens", e.to_string())
            }
            TheaterError::ScreenBusy(other) => Self::ScreenBusy(format!(
                "the screen is busy with showtime {other} at that time (runtime plus cleaning gap)"
            )),
            TheaterError::EmptySlot => Self::field("starts_at", e.to_string()),
        }
    }
}

impl From<MovieError> for ApiError {
    /// A broken movie rule.
    fn from(e: MovieError) -> Self {
        match e {
            MovieError::NotFound => Self::NotFound,
            MovieError::AlreadyExists => Self::Conflict(e.to_string()),
            MovieError::BadRuntime => Self::field("runtime_minutes", e.to_string()),
        }
    }
}

/// JSON body extractor whose rejections are problem+json.
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        // serde's messages name the field and position, not our internals: useful to a client.
        other => ApiError::Malformed(other.body_text()),
    }
}

/// Path extractor: a malformed id in the path is an unknown resource.
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_: PathRejection| ApiError::NotFound)
    }
}

/// Query extractor whose rejections are problem+json.
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::Malformed(e.body_text()))
    }
}

/// Answers routes that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Answers known routes called with a method they do not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Documents, on every operation of the OpenAPI document, the problems that come from what all
/// routes share rather than from their handlers: [`AppJson`] (400 malformed body, 413, 415),
/// [`AppQuery`] (400), [`AppPath`] (404 for a malformed id), the bearer-token extractors (401),
/// the idempotency middleware (409 while the first request with the key runs, 422 for a key
/// reused with another request) and the database (503, retry after `Retry-After`). A status
/// an operation documents itself keeps its own description. Health checks are left alone:
/// none of these stand in front of them.
pub fn document_shared_problems(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let is_health_check = operation
                .tags
                .as_ref()
                .is_some_and(|tags| tags.iter().any(|t| t == "operations"));
            if !is_health_check {
                document_operation(operation);
            }
        }
    }
}

fn document_operation(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    let mut shared = Vec::new();
    if operation.request_body.is_some() {
        shared.extend([
            (
                "400",
                "malformed-request: the body is not JSON or has wrong types",
            ),
            ("413", "payload-too-large"),
            (
                "415",
                "unsupported-media-type: send the body with Content-Type: application/json",
            ),
        ]);
    }
    if has(ParameterIn::Query) {
        shared.push((
            "400",
            "malformed-request: a query parameter has the wrong type",
        ));
    }
    if has(ParameterIn::Path) {
        shared.push(("404", "not-found"));
    }
    if operation.security.is_some() {
        shared.push((
            "401",
            "unauthenticated: missing, bad or expired bearer token",
        ));
    }
    if params.iter().any(|p| p.name == "Idempotency-Key") {
        shared.extend([
            (
                "409",
                "conflict: a request with this Idempotency-Key is still being handled",
            ),
            (
                "422",
                "validation-failed: this Idempotency-Key was used with another request",
            ),
        ]);
    }
    shared.push(("503", "service-unavailable: retry after Retry-After"));
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description));
    }
}

/// A problem+json response, as in the handlers' own annotations.
fn problem_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content)
        .build()
        .into()
}

/// Seconds rounded up, at least 1: a wait promised to a client is never shorter than the real one.
fn whole_seconds(d: std::time::Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}
