//! The namespace's JetStream stream: creating it, and reading back its last message.

use crate::{Error, Namespace};
use async_nats::jetstream::{self, message::StreamMessage, stream};
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

/// What the stream holds at its end.
pub struct Tail {
    /// The last sequence the stream assigned, deleted or not: it only grows while the
    /// stream's storage lives.
    pub last_sequence: u64,
    /// The last message still there, or `None` when the stream holds none.
    pub message: Option<StreamMessage>,
}

/// Reads the stream's tail.
///
/// Walks back from the stream's last sequence: a deleted message leaves its sequence behind
/// with nothing in it, so the last one still there may be a few sequences earlier. (Asking
/// for the last message of the namespace's wildcard subject would be one request, but NATS
/// 2.9 answers that only for a literal subject.)
pub async fn tail(stream: &mut stream::Stream) -> Result<Tail, Error> {
    let state = stream.info().await.map_err(Error::nats)?.state.clone();
    let mut tail = Tail {
        last_sequence: state.last_sequence,
        message: None,
    };
    if state.messages == 0 {
        return Ok(tail);
    }
    for sequence in (state.first_sequence..=state.last_sequence).rev() {
        match stream.get_raw_message(sequence).await {
            Ok(message) => {
                tail.message = Some(message);
                break;
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
            Err(e) => return Err(Error::nats(e)),
        }
    }
    Ok(tail)
}
