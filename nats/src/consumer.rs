//! A runner for durable JetStream pull consumers.
//!
//! It fetches batches, hands each whole batch to a [`Handler`] (one database transaction for
//! many events), and acks after the handler has committed. When a batch fails it retries the
//! events one by one to find the culprit: good events are acked, a failing one is redelivered
//! with backoff, and after [`MAX_DELIVERIES`] it is parked (recorded for operators, logged and
//! counted) and acked. Later events of a parked aggregate are the handler's to hold back.

use crate::{stream, Error, Namespace};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_trait::async_trait;
use futures::StreamExt;
use marquee_event_store::envelope::Envelope;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Deliveries of one event before it is parked.
pub const MAX_DELIVERIES: i64 = 5;
/// Messages fetched at once.
const FETCH: usize = 256;
/// How long a fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Why a handler could not apply events.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// The database or a network was unreachable: retrying later will do, and the event is
    /// never parked for it.
    pub transient: bool,
}

/// What a consumer does with its events.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Applies events in order, all or nothing. Must be idempotent: JetStream delivers at
    /// least once.
    async fn apply(&self, events: &[Envelope]) -> Result<(), Failure>;
    /// Records that `event` keeps failing with `error`.
    async fn park(&self, event: &Envelope, error: &str) -> Result<(), String>;
}

/// Which events a consumer gets, under which durable name.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Short name, e.g. the projection's; the durable name is `<ns>-<name>`.
    pub name: String,
    pub filter_subject: String,
}

/// How long JetStream waits for an ack before redelivering. A projector that crashed holds its
/// in-flight batch this long; a batch takes milliseconds, so a few seconds loses nothing but
/// bounds the delay after a crash. (A redelivery that races a slow ack is harmless: applying
/// is idempotent.)
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// The consumer's config: explicit ack, redelivered after [`ACK_WAIT`] without one, the whole
/// stream from the start for a new durable.
pub fn config(ns: &Namespace, spec: &Spec) -> pull::Config {
    pull::Config {
        durable_name: Some(ns.durable(&spec.name)),
        filter_subject: spec.filter_subject.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Runs a consumer until `shutdown`. Errors are logged and retried with backoff.
pub async fn run(
    client: async_nats::Client,
    ns: Namespace,
    spec: Spec,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(client);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume(&js, &ns, &spec, handler.as_ref(), &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(consumer = spec.name, error = %e, retry_in = ?backoff, "consumer stopped; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume(
    js: &jetstream::Context,
    ns: &Namespace,
    spec: &Spec,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let stream = stream::ensure(js, ns).await?;
    let mut consumer = stream
        .get_or_create_consumer(&ns.durable(&spec.name), config(ns, spec))
        .await
        .map_err(Error::nats)?;
    let mut reported = Instant::now() - Duration::from_secs(60);
    while !shutdown.is_cancelled() {
        if reported.elapsed() > Duration::from_secs(5) {
            let info = consumer.info().await.map_err(Error::nats)?;
            metrics::gauge!("marquee_consumer_backlog", "consumer" => spec.name.clone())
                .set((info.num_pending + info.num_ack_pending as u64) as f64);
            reported = Instant::now();
        }
        let mut batch = tokio::select! {
            b = consumer.fetch().max_messages(FETCH).expires(FETCH_WAIT).messages() => b.map_err(Error::nats)?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            messages.push(m.map_err(Error::nats)?);
        }
        handle_batch(&spec.name, handler, messages).await?;
    }
    Ok(())
}

async fn handle_batch(
    name: &str,
    handler: &dyn Handler,
    messages: Vec<jetstream::Message>,
) -> Result<(), Error> {
    let mut good = Vec::with_capacity(messages.len());
    for m in messages {
        match serde_json::from_slice::<Envelope>(&m.payload) {
            Ok(e) => good.push((m, e)),
            Err(err) => {
                tracing::error!(consumer = name, subject = %m.subject, error = %err, "message is not an event envelope; dropping it");
                m.ack_with(AckKind::Term).await.map_err(Error::nats)?;
            }
        }
    }
    if good.is_empty() {
        return Ok(());
    }
    let events: Vec<Envelope> = good.iter().map(|(_, e)| e.clone()).collect();
    if handler.apply(&events).await.is_ok() {
        for (m, _) in &good {
            m.ack().await.map_err(Error::nats)?;
        }
        return Ok(());
    }
    // Find the culprit: one by one, in order.
    for (m, event) in good {
        match handler.apply(std::slice::from_ref(&event)).await {
            Ok(()) => m.ack().await.map_err(Error::nats)?,
            Err(failure) => retry_or_park(name, handler, &m, &event, &failure).await?,
        }
    }
    Ok(())
}

async fn retry_or_park(
    name: &str,
    handler: &dyn Handler,
    m: &jetstream::Message,
    event: &Envelope,
    failure: &Failure,
) -> Result<(), Error> {
    let error = failure.message.as_str();
    // Deliveries count redeliveries after a missed ack too, and a transient failure says
    // nothing about the event: only repeated real failures park it.
    let delivered = m.info().map(|i| i.delivered).unwrap_or(1);
    if failure.transient || delivered < MAX_DELIVERIES {
        let delay = Duration::from_millis(200 * 2u64.pow(delivered.clamp(1, 6) as u32));
        tracing::warn!(
            consumer = name,
            event = event.message_id(),
            delivered,
            error,
            "applying an event failed; will retry"
        );
        return m
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(Error::nats);
    }
    tracing::error!(
        consumer = name,
        event = event.message_id(),
        error,
        "parking an event that keeps failing; its aggregate waits behind it"
    );
    metrics::counter!("marquee_consumer_parked_total", "consumer" => name.to_owned()).increment(1);
    match handler.park(event, error).await {
        Ok(()) => m.ack().await.map_err(Error::nats),
        Err(e) => {
            // Could not even record it: leave it to be redelivered.
            tracing::error!(consumer = name, error = e, "could not park the event");
            m.ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await
                .map_err(Error::nats)
        }
    }
}
