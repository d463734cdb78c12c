//! Live seat maps: seat changes pushed to browsers as they happen, fed from the event stream.
//!
//! One NATS subscription per process on `<ns>.events.Showtime.*` (the subjects the relay
//! publishes every showtime event to) feeds a [`LiveSeats`] hub. The hub keeps, for each
//! showtime somebody is watching, a copy of the showtime's state and the status of each of its
//! seats; every event folds into that copy, and the seats whose status changed go out on the
//! showtime's own `tokio::sync::broadcast` channel to the SSE connections watching it
//! (`routes::stream`). A showtime nobody watches costs nothing but a subject match.
//!
//! Why fold a copy of the aggregate instead of reading seats from the events alone: a
//! `HoldReleased` or `HoldExpired` names its reservation, not its seats, and the domain's own
//! `seat_state` already knows every rule (expiry by the clock, payment pins, refunds).
//!
//! Why the copy starts from the writer's committed state and not the read model: it carries
//! the sequence of its last event, so events already in it are skipped and a missing one is
//! noticed (a core NATS subscription is at most once). Then the copy is reloaded, never
//! guessed. The read model has no sequence and lags the stream, so a viewer who arrived between
//! a commit and its projection would miss that change for good.

use crate::writer::Writers;
use chrono::Utc;
use futures::StreamExt;
use marquee_domain::showtime::{SeatState, Showtime, ShowtimeEvent};
use marquee_domain::ShowtimeId;
use marquee_nats::{Envelope, Namespace};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Changes a slow watcher may fall behind by before it is sent a fresh snapshot instead.
const BACKLOG: usize = 256;

/// What a watcher of one showtime is told after its snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Seats whose status changed with the event `sequence` (`available`, `held`, `sold`).
    Seats {
        sequence: usize,
        seats: Vec<(String, &'static str)>,
    },
    /// The showtime was cancelled (its seats are all available again, sent before this).
    Cancelled { sequence: usize },
}

/// The per-process hub of live seat maps. Cheap to clone.
#[derive(Clone, Default)]
pub struct LiveSeats {
    watched: Arc<Mutex<HashMap<Uuid, Watched>>>,
    /// Cancelled when the process shuts down: open streams end, so the HTTP server's graceful
    /// shutdown does not wait on them forever.
    closed: CancellationToken,
}

/// One watched showtime.
struct Watched {
    /// `None` until its state is loaded; events arriving meanwhile wait in `pending`.
    copy: Option<Copy>,
    pending: Vec<Envelope>,
    /// The statuses watchers were last sent, kept while a copy that missed an event reloads,
    /// so the reload can send what changed meanwhile.
    sent: Option<Vec<(String, &'static str)>>,
    sender: broadcast::Sender<Arc<Change>>,
}

struct Copy {
    showtime: Showtime,
    version: usize,
    /// Each seat's label and last status sent, in layout order.
    statuses: Vec<(String, &'static str)>,
}

/// A seat's status as the seat map names it.
pub fn status_name(state: SeatState) -> &'static str {
    match state {
        SeatState::Available => "available",
        SeatState::Held(_) => "held",
        SeatState::Sold(_) => "sold",
    }
}

impl Copy {
    fn new(showtime: Showtime, version: usize) -> Self {
        let mut copy = Self {
            showtime,
            version,
            statuses: vec![],
        };
        copy.statuses = copy.current();
        copy
    }

    fn current(&self) -> Vec<(String, &'static str)> {
        let now = Utc::now();
        self.showtime
            .layout()
            .seats()
            .map(|s| {
                let status = status_name(self.showtime.seat_state(&s.label, now));
                (s.label.to_string(), status)
            })
            .collect()
    }

    /// Folds one event in. `Err(())` when an event is missing before it: reload.
    fn apply(&mut self, envelope: &Envelope) -> Result<Vec<Change>, ()> {
        let sequence = usize::try_from(envelope.sequence).map_err(|_| ())?;
        if sequence <= self.version {
            return Ok(vec![]); // already in the copy
        }
        if sequence != self.version + 1 {
            return Err(());
        }
        let event: ShowtimeEvent =
            marquee_projections::projection::decode(envelope).map_err(|_| ())?;
        let cancelled = matches!(event, ShowtimeEvent::ShowtimeCancelled { .. });
        cqrs_es::Aggregate::apply(&mut self.showtime, event);
        self.version = sequence;
        let now = self.current();
        let seats = diff(&self.statuses, &now);
        self.statuses = now;
        let mut changes = vec![];
        if !seats.is_empty() {
            changes.push(Change::Seats { sequence, seats });
        }
        if cancelled {
            changes.push(Change::Cancelled { sequence });
        }
        Ok(changes)
    }
}

impl LiveSeats {
    /// Ends every open stream (at shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves when the process shuts down.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Starts watching a showtime (or joins its watchers): `snapshot` reads the current copy,
    /// and the receiver gets every change after it. `None` for an unknown showtime.
    pub async fn watch<T>(
        &self,
        writers: &Writers,
        id: Uuid,
        snapshot: impl Fn(&Showtime, usize) -> T,
    ) -> Result<Option<(T, broadcast::Receiver<Arc<Change>>)>, crate::event_store::StoreError> {
        // Twice at most: another watcher's cleanup may drop the entry between loading it and
        // joining it, and then it is loaded again.
        for _ in 0..2 {
            if let Some(ready) = self.join(id, &snapshot) {
                return Ok(Some(ready));
            }
            if !self.load(writers, id).await? {
                self.watched.lock().expect("lock poisoned").remove(&id);
                return Ok(None);
            }
        }
        Ok(self.join(id, &snapshot))
    }

    /// The snapshot and a receiver of a loaded showtime, atomically; registers the showtime
    /// as watched (not loaded yet) when it is new.
    fn join<T>(
        &self,
        id: Uuid,
        snapshot: &impl Fn(&Showtime, usize) -> T,
    ) -> Option<(T, broadcast::Receiver<Arc<Change>>)> {
        let mut watched = self.watched.lock().expect("lock poisoned");
        // Drops showtimes nobody watches any more (never the one being joined: it has no
        // receiver yet right after loading).
        watched.retain(|k, w| *k == id || w.sender.receiver_count() > 0 || w.copy.is_none());
        let entry = watched.entry(id).or_insert_with(|| Watched {
            copy: None,
            pending: vec![],
            sent: None,
            sender: broadcast::channel(BACKLOG).0,
        });
        let copy = entry.copy.as_ref()?;
        Some((
            snapshot(&copy.showtime, copy.version),
            entry.sender.subscribe(),
        ))
    }

    /// Loads a watched showtime's committed state and replays what arrived meanwhile.
    /// `false` when the showtime does not exist.
    async fn load(
        &self,
        writers: &Writers,
        id: Uuid,
    ) -> Result<bool, crate::event_store::StoreError> {
        // Read only: watching a closed showtime must not start its writer.
        let Some(shared) = writers.read(ShowtimeId(id)).await? else {
            return Ok(false);
        };
        let committed = shared.read().expect("lock poisoned").clone();
        if !committed.showtime.exists() {
            return Ok(false);
        }
        let mut watched = self.watched.lock().expect("lock poisoned");
        let Some(entry) = watched.get_mut(&id) else {
            return Ok(true); // nobody waits any more
        };
        if entry.copy.is_some() {
            return Ok(true); // another watcher loaded it first
        }
        let mut copy = Copy::new(committed.showtime, committed.version);
        if let Some(sent) = entry.sent.take() {
            let seats = diff(&sent, &copy.statuses);
            if !seats.is_empty() {
                let sequence = copy.version;
                send(&entry.sender, vec![Change::Seats { sequence, seats }]);
            }
        }
        for envelope in std::mem::take(&mut entry.pending) {
            // A gap here cannot be filled: the state was read after these were committed.
            if let Ok(changes) = copy.apply(&envelope) {
                send(&entry.sender, changes);
            }
        }
        entry.copy = Some(copy);
        Ok(true)
    }

    /// Takes one published event. Returns the showtime to reload when an event was missed.
    fn receive(&self, envelope: Envelope) -> Option<Uuid> {
        let id: Uuid = envelope.aggregate_id.parse().ok()?;
        let mut watched = self.watched.lock().expect("lock poisoned");
        let entry = watched.get_mut(&id)?;
        if entry.sender.receiver_count() == 0 && entry.copy.is_some() {
            watched.remove(&id);
            return None;
        }
        let Some(copy) = entry.copy.as_mut() else {
            entry.pending.push(envelope);
            return None;
        };
        match copy.apply(&envelope) {
            Ok(changes) => {
                send(&entry.sender, changes);
                None
            }
            Err(()) => {
                entry.sent = entry.copy.take().map(|c| c.statuses);
                entry.pending.push(envelope);
                Some(id)
            }
        }
    }

    /// Follows the showtime events of the namespace until `shutdown`, resubscribing when the
    /// connection drops its subscription.
    pub async fn run(
        self,
        client: async_nats::Client,
        ns: Namespace,
        writers: Writers,
        shutdown: CancellationToken,
    ) {
        let subject = ns.aggregate_filter("Showtime");
        while !shutdown.is_cancelled() {
            let mut messages = match client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "live seat maps cannot subscribe; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = messages.next() => m,
                    _ = shutdown.cancelled() => return,
                };
                let Some(message) = message else { break };
                let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload) else {
                    continue;
                };
                if let Some(id) = self.receive(envelope) {
                    self.reload(&writers, id).await;
                }
            }
        }
    }

    async fn reload(&self, writers: &Writers, id: Uuid) {
        if let Err(e) = self.load(writers, id).await {
            tracing::warn!(showtime = %id, error = %e, "live seat map cannot reload");
        }
    }
}

/// The seats of `new` whose status differs from `old` (both in layout order).
fn diff(
    old: &[(String, &'static str)],
    new: &[(String, &'static str)],
) -> Vec<(String, &'static str)> {
    new.iter()
        .zip(old)
        .filter(|(new, old)| new.1 != old.1)
        .map(|(new, _)| new.clone())
        .collect()
}

fn send(sender: &broadcast::Sender<Arc<Change>>, changes: Vec<Change>) {
    for change in changes {
        // No receiver is fine: the entry is dropped at its next event.
        let _ = sender.send(Arc::new(change));
    }
}
