//! `Idempotency-Key` for the creating POSTs.
//!
//! The first request with a key is handled and its response remembered in Postgres; the same
//! key and the same request within 24 hours gets that response again without running
//! anything (no second hold, no second charge). The same key with another request is 422. A
//! second copy arriving while the first is still running is 409, so two retries racing each
//! other cannot both run. Failures the client should retry (5xx, 429) are not remembered.
//!
//! Keys are honoured only where the API documents them: the creating `POST`s of [`ROUTES`],
//! each only for a caller allowed to make it. Anywhere else a key is ignored, so no anonymous
//! request can make the engine buffer a body or a stream, or store a row. Keys are scoped to
//! the verified user; registration has no user, so its key is scoped to the request itself
//! (another client reusing the key gets no one else's answer).

use crate::auth::{bearer, AuthUser};
use crate::deadlines::MAX_REQUEST_BODY;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

/// After this long without an answer a claim counts as abandoned (its process died). Longer
/// than any request can take, payment latency included.
const ABANDONED_AFTER_SECONDS: i32 = 120;
/// The largest answer remembered: a created theater echoes a request of up to 64 KiB.
const MAX_RESPONSE_BODY: usize = 1 << 20;
/// How long a key is remembered.
const KEEP_HOURS: i32 = 24;

/// Who may use a key on a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// Anyone: the key is scoped to the request.
    Anyone,
    /// A customer with a valid token.
    User,
    /// An admin.
    Admin,
}

/// The routes that honour `Idempotency-Key` (all `POST`), and who may use it there.
const ROUTES: [(&str, Caller); 6] = [
    ("/v1/users", Caller::Anyone),
    ("/v1/theaters", Caller::Admin),
    ("/v1/movies", Caller::Admin),
    ("/v1/showtimes", Caller::Admin),
    ("/v1/reservations", Caller::User),
    ("/v1/tickets", Caller::User),
];

pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match handle(state, request, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The route's caller rule, when the request is a `POST` to a route that honours keys.
fn honoured_on(method: &Method, path: &str) -> Option<Caller> {
    if method != Method::POST {
        return None;
    }
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
}

/// The user a key is scoped to, when the caller may use keys on the route; `None` ignores it.
fn verified_user(
    state: &AppState,
    parts: &axum::http::request::Parts,
    caller: Caller,
) -> Option<AuthUser> {
    let user = bearer(parts).and_then(|t| state.keys.verify(t).ok());
    match caller {
        Caller::Anyone => None,
        Caller::User => user,
        Caller::Admin => user.filter(AuthUser::is_admin),
    }
}

async fn handle(state: AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(caller) = honoured_on(request.method(), request.uri().path()) else {
        return Ok(next.run(request).await);
    };
    let Some(key) = request.headers().get("idempotency-key") else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(key)?;
    let (parts, body) = request.into_parts();
    let user = verified_user(&state, &parts, caller);
    if caller != Caller::Anyone && user.is_none() {
        // Refused by the route anyway (401 or 403): nothing to remember.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    // The same limit the route applies, before a byte more is read.
    let bytes = to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let hash = state.keys.fingerprint(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);
    let scope = match &user {
        Some(u) => u.id.0,
        None => request_scope(&hash),
    };
    if !claim(&state, scope, &key, &hash).await? {
        return replay(&state, scope, &key, &hash).await;
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    remember(&state, scope, &key, response).await
}

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })
}

/// Claims the key for this request; false when another request holds it (or held it and
/// remembered its answer). Exactly one of several concurrent requests wins.
async fn claim(state: &AppState, scope: Uuid, key: &str, hash: &str) -> Result<bool, ApiError> {
    // Forget an expired key, or a claim whose request never finished (the process died with
    // it), first.
    sqlx::query(&format!(
        "delete from idempotency_keys where scope = $1 and key = $2
           and (created_at < now() - interval '{KEEP_HOURS} hours'
                or (status is null and created_at < now() - interval '{ABANDONED_AFTER_SECONDS} seconds'))"
    ))
    .bind(scope)
    .bind(key)
    .execute(&state.pool)
    .await?;
    let inserted = sqlx::query(
        "insert into idempotency_keys (scope, key, request_hash) values ($1, $2, $3)
         on conflict do nothing",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .execute(&state.pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
/// The scope of a key used without an account: the request's own fingerprint, as a UUID.
fn request_scope(hash: &str) -> Uuid {
    let bytes = hash.get(..32).and_then(|h| hex::decode(h).ok());
    Uuid::from_slice(&bytes.expect("a fingerprint is 64 hex digits")).expect("16 bytes")
}

/// A remembered request and, once it finished, its response.
#[derive(sqlx::FromRow)]
struct Remembered {
    request_hash: String,
    status: Option<i16>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

async fn replay(
    state: &AppState,
    scope: Uuid,
    key: &str,
    hash: &str,
) -> Result<Response, ApiError> {
    let row: Option<Remembered> = sqlx::query_as(
        "select request_hash, status, content_type, body from idempotency_keys
         where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&state.pool)
    .await?;
    let Some(Remembered {
        request_hash: stored_hash,
        status,
        content_type,
        body,
    }) = row
    else {
        return Err(ApiError::Conflict(
            "the request with this Idempotency-Key just failed; retry".into(),
        ));
    };
    if stored_hash != hash {
        return Err(ApiError::field(
            "Idempotency-Key",
            "this key was used with a different request",
        ));
    }
    let Some(status) = status else {
        return Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being handled".into(),
        ));
    };
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

async fn remember(
    state: &AppState,
    scope: Uuid,
    key: &str,
    response: Response,
) -> Result<Response, ApiError> {
    let status = response.status();
    let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        sqlx::query("delete from idempotency_keys where scope = $1 and key = $2")
            .bind(scope)
            .bind(key)
            .execute(&state.pool)
            .await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_RESPONSE_BODY)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading response: {e}")))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    sqlx::query(
        "update idempotency_keys set status = $3, content_type = $4, body = $5
         where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(status.as_u16() as i16)
    .bind(content_type)
    .bind(bytes.to_vec())
    .execute(&state.pool)
    .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Drops remembered keys older than 24 hours.
pub async fn purge_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "delete from idempotency_keys where created_at < now() - interval '{KEEP_HOURS} hours'"
    ))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
