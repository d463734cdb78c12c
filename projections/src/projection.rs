//! What a projection is.

use async_trait::async_trait;
use marquee_event_store::envelope::Envelope;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot decode {event_type} v{version}: {message}")]
    Decode {
        event_type: String,
        version: String,
        message: String,
    },
}

/// One read model, built from the events of one aggregate type.
///
/// `apply` is a plain function of the event and a connection inside the caller's
/// transaction; it names tables without a schema, so a rebuild can point it at fresh tables.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable short name: the durable consumer's and the progress rows'.
    fn name(&self) -> &'static str;
    /// The aggregate type whose events it reads.
    fn aggregate_type(&self) -> &'static str;
    /// The tables it writes, in the order to create them.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event. Called once per event and aggregate sequence, in sequence order.
    async fn apply(&self, event: &Envelope, db: &mut PgConnection) -> Result<(), ProjectionError>;

    /// Applies consecutive events of one aggregate, in sequence order, as [`Projection::apply`]
    /// on each would. A projection may override it to write a run in fewer statements.
    async fn apply_run(
        &self,
        events: &[Envelope],
        db: &mut PgConnection,
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(event, db).await?;
        }
        Ok(())
    }
}

/// Money as the read models store it.
pub fn money_json(m: &marquee_domain::Money) -> serde_json::Value {
    serde_json::json!({"amount": m.amount, "currency": m.currency})
}

/// Decodes an event's payload into the domain's event type, upcasting an older shape first.
pub fn decode<E: DeserializeOwned>(event: &Envelope) -> Result<E, ProjectionError> {
    let mut payload = event.payload.clone();
    marquee_domain::upcast::upcast(&event.event_type, &event.event_version, &mut payload).map_err(
        |e| ProjectionError::Decode {
            event_type: event.event_type.clone(),
            version: event.event_version.clone(),
            message: e.to_string(),
        },
    )?;
    serde_json::from_value(payload).map_err(|e| ProjectionError::Decode {
        event_type: event.event_type.clone(),
        version: event.event_version.clone(),
        message: e.to_string(),
    })
}
