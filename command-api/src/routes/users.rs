//! Accounts and tokens: `/v1/users`, `/v1/auth/token`, `/v1/users/me`.

use super::dto::Errors;
use crate::accounts::{self, Account};
use crate::auth::{AuthUser, TOKEN_TTL_SECONDS};
use crate::error::{ApiError, AppJson};
use crate::passwords::{self, MAX_CHARS};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use marquee_domain::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(token))
        .routes(routes!(me, update_me))
}

/// A registration.
#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    #[schema(example = "ann@example.com", format = "email", max_length = 254)]
    pub email: String,
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[schema(example = "Ann Smith")]
    pub name: String,
    #[serde(default)]
    pub address: Option<String>,
}

/// An account as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub address: Option<String>,
    /// `customer`, and `admin` for administrators.
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Account> for User {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            email: a.email,
            name: a.name,
            address: a.address,
            roles: a.roles,
            created_at: a.created_at,
        }
    }
}

/// Credentials for a token.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// A bearer token.
#[derive(Serialize, ToSchema)]
pub struct Token {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// Changes to one's own account; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
pub struct UserChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

fn check_email(errors: &mut Errors, email: &str) -> String {
    let email = errors.text("email", email, 254);
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !email.contains(char::is_whitespace);
    if !email.is_empty() && !valid {
        errors.add("email", "must be an email address such as ann@example.com");
    }
    email
}

/// Register a customer account.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe")),
    responses((status = 201, body = User),
        (status = 409, description = "email-taken", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation-failed", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate-limited; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded (too many passwords are being checked at once) or service-unavailable; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn register(
    State(state): State<AppState>,
    AppJson(body): AppJson<NewUser>,
) -> Result<(StatusCode, axum::Json<User>), ApiError> {
    let mut errors = Errors::default();
    let email = check_email(&mut errors, &body.email);
    let name = errors.text("name", &body.name, 200);
    let address = errors.optional_text("address", body.address.as_deref(), 500);
    if !passwords::length_is_valid(&body.password) {
        let min = passwords::MIN_CHARS;
        errors.add(
            "password",
            format!("must be {min} to {MAX_CHARS} characters"),
        );
    }
    errors.finish()?;
    let hash = state.hashes.hash(body.password).await?;
    let user = accounts::register(&state.pool, &email, hash, name, address)
        .await?
        .map(User::from)
        .ok_or(ApiError::EmailTaken)?;
    tracing::info!(user = %user.id, "account registered");
    Ok((StatusCode::CREATED, axum::Json(user)))
}

/// Exchange email and password for a bearer token.
#[utoipa::path(post, path = "/v1/auth/token", tag = "users", request_body = Credentials,
    responses((status = 200, body = Token),
        (status = 401, description = "unauthenticated: unknown email or wrong password", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate-limited; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded (too many passwords are being checked at once) or service-unavailable; retry after Retry-After", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn token(
    State(state): State<AppState>,
    AppJson(body): AppJson<Credentials>,
) -> Result<axum::Json<Token>, ApiError> {
    // An email no account can have (Postgres refuses NUL in text) is just a failed login.
    let email = body.email.trim();
    let possible = email.len() <= 254 && !email.contains('\0');
    let login = if possible {
        accounts::login(&state.pool, email).await?
    } else {
        None
    };
    let password = body.password.chars().take(MAX_CHARS).collect();
    let hash = login.as_ref().map(|l| l.password_hash.clone());
    if !state.hashes.verify(password, hash).await? {
        return Err(ApiError::Unauthenticated("wrong email or password"));
    }
    let login = login.expect("verify is false without a stored hash");
    Ok(axum::Json(Token {
        access_token: state.keys.issue(UserId(login.id), &login.roles),
        token_type: "Bearer",
        expires_in: TOKEN_TTL_SECONDS,
    }))
}

/// The caller's own account.
#[utoipa::path(get, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<User>, ApiError> {
    accounts::get(&state.pool, user.id)
        .await?
        .map(|a| axum::Json(a.into()))
        .ok_or(ApiError::Unauthenticated("the account no longer exists"))
}

/// Change one's name or address.
#[utoipa::path(patch, path = "/v1/users/me", tag = "users", security(("bearer" = [])),
    request_body = UserChanges,
    responses((status = 200, body = User), (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<UserChanges>,
) -> Result<axum::Json<User>, ApiError> {
    let mut errors = Errors::default();
    let name = body.name.as_deref().map(|n| errors.text("name", n, 200));
    let address = errors.optional_text("address", body.address.as_deref(), 500);
    errors.finish()?;
    accounts::update(&state.pool, user.id, name, address)
        .await?
        .map(|a| axum::Json(a.into()))
        .ok_or(ApiError::Unauthenticated("the account no longer exists"))
}
