//! What every request handler can reach.

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::event_store::EventStore;
use crate::payment::PaymentProvider;
use crate::writer::Writers;
use sqlx::PgPool;
use std::sync::Arc;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: EventStore,
    pub writers: Writers,
    pub keys: Arc<TokenKeys>,
    pub payments: Arc<dyn PaymentProvider>,
    pub config: Arc<Config>,
    /// The NATS connection, once established (readiness reports it).
    pub nats: Arc<tokio::sync::OnceCell<async_nats::Client>>,
    /// Prefix of JetStream names.
    pub namespace: marquee_nats::Namespace,
    /// Live seat maps for the seat-map streams.
    pub live: crate::live::LiveSeats,
}
