//! Bearer tokens, the extractors that check them, and the bootstrap admin account.
//!
//! Tokens are HS256 JWTs carrying the user id and roles; only HS256 is accepted, so a token
//! claiming `none` or another algorithm is refused. One secret is configured or generated;
//! the token signing key and the key of request fingerprints are derived from it apart
//! (HKDF-SHA256, one label each), so what one of them yields never serves the other.

use crate::error::ApiError;
use crate::passwords::{self, Hashes};
use anyhow::{bail, Context};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use chrono::Utc;
use hmac::{Hmac, Mac};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use marquee_domain::UserId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

/// How long an access token is valid.
pub const TOKEN_TTL_SECONDS: i64 = 3600;

const ISSUER: &str = "marquee";

/// The role that may run the catalog and read the event history.
pub const ADMIN: &str = "admin";

/// The label of the token signing key. Changing it (or the derivation) invalidates every
/// token issued; they last an hour.
const SIGNING_LABEL: &[u8] = b"marquee token signing v1";
/// The label of the request fingerprint key. Changing it makes a retry of a request sent
/// before the change look like another request under the same `Idempotency-Key`.
const FINGERPRINT_LABEL: &[u8] = b"marquee request fingerprint v1";

/// The keys of bearer tokens and request fingerprints, derived from one secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    fingerprint_key: [u8; 32],
}

/// A 32-byte key for one purpose, derived from the secret with HKDF-SHA256.
fn derive_key(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, secret)
        .expand(label, &mut key)
        .expect("32 bytes is far below HKDF-SHA256's longest output");
    key
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
        let signing = derive_key(secret, SIGNING_LABEL);
        Self {
            encoding: EncodingKey::from_secret(&signing),
            decoding: DecodingKey::from_secret(&signing),
            fingerprint_key: derive_key(secret, FINGERPRINT_LABEL),
        }
    }

    /// A keyed fingerprint (HMAC-SHA256) of some bytes: who does not know the secret cannot
    /// test guesses against it (request bodies can hold card numbers).
    pub fn fingerprint(&self, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.fingerprint_key)
            .expect("HMAC takes keys of any length");
        for part in parts {
            // Each part's length first, so that moving bytes between parts changes the result.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
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

    /// The metadata of the events this user's request causes.
    pub fn metadata(&self) -> marquee_event_store::metadata::Metadata {
        marquee_event_store::metadata::Metadata::for_user(self.id, self.request_id.clone())
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

/// A state the extractors can check tokens with.
pub trait HasKeys {
    fn keys(&self) -> &TokenKeys;
}

impl<S: HasKeys + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthenticated(
            "send Authorization: Bearer <token>",
        ))?;
        let mut user = state.keys().verify(token)?;
        user.request_id = request_id(parts);
        Ok(user)
    }
}

/// The caller if a token was sent; a bad token is still refused.
pub struct MaybeUser(pub Option<AuthUser>);

impl<S: HasKeys + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match bearer(parts) {
            None => Ok(Self(None)),
            Some(token) => state.keys().verify(token).map(|u| Self(Some(u))),
        }
    }
}

/// An admin caller.
pub struct Admin(pub AuthUser);

impl<S: HasKeys + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(Self(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Refuses a bootstrap admin password that registration would refuse.
pub fn check_admin_password(password: &str) -> anyhow::Result<()> {
    if !passwords::length_is_valid(password) {
        bail!(
            "MARQUEE_ADMIN_PASSWORD must be {} to {} characters long",
            passwords::MIN_CHARS,
            passwords::MAX_CHARS
        );
    }
    Ok(())
}

/// Makes sure the configured admin account exists, with the admin role and the configured
/// password.
pub async fn bootstrap_admin(
    pool: &PgPool,
    hashes: &Hashes,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    check_admin_password(password)?;
    let hash = hashes.hash(password.to_owned()).await?;
    crate::accounts::ensure_admin(pool, email.trim(), hash)
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

    #[test]
    fn the_signing_and_fingerprint_keys_are_apart_and_a_fingerprint_key_signs_no_token() {
        let secret = [7u8; 32];
        let signing = derive_key(&secret, SIGNING_LABEL);
        let fingerprint = derive_key(&secret, FINGERPRINT_LABEL);
        assert_ne!(signing, fingerprint);
        assert_ne!(&signing[..], &secret[..], "the secret itself signs nothing");
        let keys = TokenKeys::new(&secret);
        let user = UserId(Uuid::from_u128(5));
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.0,
            roles: vec![ADMIN.into()],
            iat: now,
            exp: now + 600,
            iss: ISSUER.into(),
        };
        let signed_with = |key: &[u8]| {
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(key),
            )
            .expect("HS256 signing cannot fail")
        };
        assert!(
            keys.verify(&signed_with(&signing)).is_ok(),
            "the control token"
        );
        assert!(
            keys.verify(&signed_with(&keys.fingerprint_key)).is_err(),
            "the fingerprint key signs no token"
        );
        assert_eq!(keys.fingerprint_key, fingerprint);
        assert!(keys.verify(&signed_with(&secret)).is_err());
        // Processes sharing the secret derive the same keys: their tokens serve each other.
        let token = TokenKeys::new(&secret).issue(user, &[]);
        assert_eq!(keys.verify(&token).unwrap().id, user);
    }

    #[test]
    fn fingerprints_are_keyed_and_tell_parts_apart() {
        let keys = TokenKeys::new(&[7u8; 32]);
        let print = keys.fingerprint(&[b"POST", b"/v1/tickets", b"{}"]);
        assert_eq!(
            print,
            TokenKeys::new(&[7u8; 32]).fingerprint(&[b"POST", b"/v1/tickets", b"{}"])
        );
        assert_ne!(
            print,
            TokenKeys::new(&[8u8; 32]).fingerprint(&[b"POST", b"/v1/tickets", b"{}"])
        );
        assert_ne!(print, keys.fingerprint(&[b"POST", b"/v1/ticket", b"s{}"]));
    }

    #[test]
    fn an_admin_password_registration_would_refuse_is_refused() {
        let err = check_admin_password("short").unwrap_err().to_string();
        assert!(
            err.contains("MARQUEE_ADMIN_PASSWORD must be 8 to 1024"),
            "{err}"
        );
        assert!(check_admin_password(&"x".repeat(1025)).is_err());
        assert!(check_admin_password("long-enough").is_ok());
    }
}
