//! What every request handler can reach.

use crate::auth::TokenKeys;
use crate::config::Config;
use marquee_event_store::event_store::EventStore;
use marquee_event_store::writer::Writers;
use marquee_payments::processor::PaymentProvider;
use sqlx::PgPool;
use std::sync::Arc;

/// Shared by all handlers: one pointer, so cloning it (axum does for every extractor and
/// middleware of every request) is one reference count. It used to be the fields themselves,
/// and cloning and dropping them took 7% of the engine's CPU under load.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub pool: PgPool,
    pub store: EventStore,
    pub writers: Writers,
    pub keys: Arc<TokenKeys>,
    pub hashes: crate::passwords::Hashes,
    pub payments: Arc<dyn PaymentProvider>,
    pub config: Arc<Config>,
    /// The NATS connection, once established (readiness reports it).
    pub nats: Arc<tokio::sync::OnceCell<async_nats::Client>>,
    /// Prefix of JetStream names.
    pub namespace: marquee_nats::Namespace,
    /// Live seat maps for the seat-map streams.
    pub live: crate::live::LiveSeats,
    /// The last readiness answer, shared by every `/readyz` caller.
    pub readiness: crate::readiness::Cached,
}

impl crate::auth::HasKeys for AppState {
    fn keys(&self) -> &TokenKeys {
        &self.keys
    }
}
