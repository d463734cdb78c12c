//! The namespace's JetStream stream.

use crate::{Error, Namespace};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long JetStream remembers message ids to drop duplicates. The relay republishes at most
/// a batch after a crash, seconds apart, so two minutes is ample.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream if it does not exist and returns it.
///
/// The stream keeps every event (no age limit): a projection created later, or one that was
/// down for long, still gets the whole history. Postgres remains the source of truth; the
/// stream can be dropped and refilled by the relay from its checkpoint.
pub async fn ensure(js: &jetstream::Context, ns: &Namespace) -> Result<stream::Stream, Error> {
    js.get_or_create_stream(stream::Config {
        name: ns.stream(),
        subjects: vec![ns.all_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(Error::nats)
}
