//! The `accounts` table: who can log in, with which password hash and roles. The only module
//! that writes SQL for accounts; the routes and the bootstrap admin call it.

use chrono::{DateTime, Utc};
use marquee_domain::UserId;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// An account as stored, without its password hash.
#[derive(Debug, FromRow)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub address: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What a login checks.
#[derive(Debug, FromRow)]
pub struct Login {
    pub id: Uuid,
    pub password_hash: String,
    pub roles: Vec<String>,
}

/// A new customer account; `None` when the email (in any case) has one already.
pub async fn register(
    pool: &PgPool,
    email: &str,
    password_hash: String,
    name: String,
    address: Option<String>,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "insert into accounts (id, email, password_hash, name, address)
         values ($1, $2, $3, $4, $5)
         on conflict ((lower(email))) do nothing
         returning id, email, name, address, roles, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(password_hash)
    .bind(name)
    .bind(address)
    .fetch_optional(pool)
    .await
}

/// The account an email (in any case) logs in to.
pub async fn login(pool: &PgPool, email: &str) -> Result<Option<Login>, sqlx::Error> {
    sqlx::query_as("select id, password_hash, roles from accounts where lower(email) = lower($1)")
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// An account by id.
pub async fn get(pool: &PgPool, id: UserId) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("select id, email, name, address, roles, created_at from accounts where id = $1")
        .bind(id.0)
        .fetch_optional(pool)
        .await
}

/// Changes an account's name or address (each left as it is when `None`).
pub async fn update(
    pool: &PgPool,
    id: UserId,
    name: Option<String>,
    address: Option<String>,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "update accounts set name = coalesce($2, name), address = coalesce($3, address),
                updated_at = now()
         where id = $1
         returning id, email, name, address, roles, created_at",
    )
    .bind(id.0)
    .bind(name)
    .bind(address)
    .fetch_optional(pool)
    .await
}

/// Makes sure an admin account with this email exists, with the admin role and this
/// password hash.
pub async fn ensure_admin(
    pool: &PgPool,
    email: &str,
    password_hash: String,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into accounts (id, email, password_hash, name, roles)
         values ($1, $2, $3, 'Administrator', '{customer,admin}')
         on conflict ((lower(email))) do update
            set password_hash = excluded.password_hash,
                roles = array(select distinct unnest(accounts.roles || '{admin}'::text[])),
                updated_at = now()",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(())
}
