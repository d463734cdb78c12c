//! Why the store could not do what was asked, and which database errors mean it is down.

use cqrs_es::persist::PersistenceError;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the same aggregate first.
    #[error("another writer appended to the aggregate first")]
    Conflict,
    /// Postgres cannot be reached right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("event store error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if database_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Database(e)
        }
    }
}

impl From<PersistenceError> for StoreError {
    fn from(e: PersistenceError) -> Self {
        match e {
            PersistenceError::ConnectionError(cause) => Self::Unavailable(cause.to_string()),
            PersistenceError::UnknownError(cause) => match cause.downcast::<sqlx::Error>() {
                Ok(sqlx) => (*sqlx).into(),
                Err(other) => Self::Other(other.to_string()),
            },
            other => Self::Other(other.to_string()),
        }
    }
}

/// Whether `e` means PostgreSQL cannot be reached or is restarting (a connection refused,
/// reset or timed out, the pool empty, or the server shutting down or starting up), as
/// opposed to a statement that failed: worth a 503 and a retry, never a 500.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot
        // connect now.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl StoreError {
    /// An insert's error: a taken key is [`StoreError::Conflict`].
    pub fn from_insert(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => Self::Conflict,
            _ => e.into(),
        }
    }

    /// The same error again, for answering every caller of a failed batch.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Conflict => Self::Conflict,
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            other => Self::Other(other.to_string()),
        }
    }
}
