//! Passwords, bearer tokens and the extractors that check them.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes). Tokens
//! are HS256 JWTs carrying the user id and roles; only HS256 is accepted, so a token claiming
//! `none` or another algorithm is refused.

use crate::error::ApiError;
use crate::state::AppState;
use anyhow::Context;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use chrono::Utc;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use marquee_domain::UserId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// How long an access token is valid.
pub const TOKEN_TTL_SECONDS: i64 = 3600;

const ISSUER: &str = "marquee";

/// The role that may run the catalog and read the event history.
pub const ADMIN: &str = "admin";

/// The signing keys of bearer tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    secret: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    roles: Vec<String>,
    iat: i64,
    exp: i64,
    iss: String,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            secret: secret.to_vec(),
        }
    }

    /// A keyed fingerprint of some bytes: who does not know the secret cannot test guesses
    /// against it (request bodies can hold card numbers).
    pub fn fingerprint(&self, parts: &[&[u8]]) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update((self.secret.len() as u64).to_be_bytes());
        hasher.update(&self.secret);
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hex::encode(hasher.finalize())
    }

    /// Signs a token for a user.
    pub fn issue(&self, user: UserId, roles: &[String]) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.0,
            roles: roles.to_vec(),
            iat: now,
            exp: now + TOKEN_TTL_SECONDS,
            iss: ISSUER.into(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of a small claim set cannot fail")
    }

    /// Checks a token's signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        let data = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::Unauthenticated("the bearer token is invalid or expired"))?;
        Ok(AuthUser {
            id: UserId(data.claims.sub),
            roles: data.claims.roles,
            request_id: String::new(),
        })
    }
}

/// The signing secret: `MARQUEE_JWT_SECRET` when set, else one generated once and kept in the
/// database so that every process and every restart shares it.
pub async fn signing_secret(pool: &PgPool, configured: Option<&str>) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Two processes starting at once both try; the first insert wins and both read it back.
    let inserted = sqlx::query(
        "insert into settings (key, value) values ('jwt_secret', $1) on conflict (key) do nothing",
    )
    .bind(hex::encode(bytes))
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::warn!(
            "MARQUEE_JWT_SECRET is not set: generated a token signing secret and stored it in the \
             database; set MARQUEE_JWT_SECRET to manage it yourself"
        );
    }
    let value: String = sqlx::query_scalar("select value from settings where key = 'jwt_secret'")
        .fetch_one(pool)
        .await?;
    Ok(value.into_bytes())
}

/// Hashes a password with argon2id. CPU-heavy (tens of milliseconds): runs off the async
/// workers.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await
    .context("hashing task failed")?
}

/// Checks a password against a stored hash. With no hash (unknown email) it checks against a
/// dummy one, so that both failures take the same time and answer the same.
pub async fn verify_password(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("bad hash: {e}"))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await
    .context("verification task failed")?
}

/// An argon2id hash of a random string, used for timing-equal failures.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7Vk3w8lvmxYcnUxq2bN5Fq7mUu9yd3JbSxPz1mO9Jv4";

/// The caller, from a valid bearer token.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: UserId,
    pub roles: Vec<String>,
    /// The request's `x-request-id`: the correlation id of every event it causes.
    pub request_id: String,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN)
    }
}

/// The request id set (or passed on) by the request-id middleware, at most 64 visible ASCII
/// characters; a fresh UUID when there is none.
pub fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthenticated(
            "send Authorization: Bearer <token>",
        ))?;
        let mut user = state.keys.verify(token)?;
        user.request_id = request_id(parts);
        Ok(user)
    }
}

/// The caller if a token was sent; a bad token is still refused.
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts) {
            None => Ok(Self(None)),
            Some(token) => state.keys.verify(token).map(|u| Self(Some(u))),
        }
    }
}

/// An admin caller.
pub struct Admin(pub AuthUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(Self(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Makes sure the configured admin account exists, with the admin role and the configured
/// password.
pub async fn bootstrap_admin(pool: &PgPool, email: &str, password: &str) -> anyhow::Result<()> {
    let hash = hash_password(password.to_owned()).await?;
    sqlx::query(
        "insert into accounts (id, email, password_hash, name, roles)
         values ($1, $2, $3, 'Administrator', '{customer,admin}')
         on conflict ((lower(email))) do update
            set password_hash = excluded.password_hash,
                roles = array(select distinct unnest(accounts.roles || '{admin}'::text[])),
                updated_at = now()",
    )
    .bind(Uuid::now_v7())
    .bind(email.trim())
    .bind(hash)
    .execute(pool)
    .await
    .context("cannot create the admin account")?;
    tracing::info!("admin account is ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_a_forged_one_is_refused() {
        let keys = TokenKeys::new(&[7u8; 32]);
        let user = UserId(Uuid::from_u128(5));
        let token = keys.issue(user, &["customer".into()]);
        assert_eq!(keys.verify(&token).unwrap().id, user);
        let other = TokenKeys::new(&[8u8; 32]);
        assert!(
            other.verify(&token).is_err(),
            "another key must not verify it"
        );
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(keys.verify(&tampered).is_err());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let keys = TokenKeys::new(&[7u8; 32]);
        // {"alg":"none"} header with valid-looking claims and no signature.
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDUiLCJyb2xlcyI6WyJhZG1pbiJdLCJpYXQiOjAsImV4cCI6OTk5OTk5OTk5OSwiaXNzIjoibWFycXVlZSJ9.";
        assert!(keys.verify(token).is_err());
    }

    #[tokio::test]
    async fn passwords_verify_and_unknown_users_fail_the_same_way() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(verify_password("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify_password("wrong".into(), Some(hash)).await.unwrap());
        assert!(!verify_password("correct horse".into(), None).await.unwrap());
    }
}
