//! Live seat maps: seat changes pushed to browsers as they happen, fed from the event stream.
//!
//! One NATS subscription per process on `<ns>.events.Showtime.*` (the subjects the relay
//! publishes every showtime event to) feeds a [`LiveSeats`] hub. The hub keeps, for each
//! showtime somebody is watching, a copy of the showtime's state and the status of each of its
//! seats; every event folds into that copy, and the seats whose status changed go out on the
//! showtime's own `tokio::sync::broadcast` channel to the SSE connections watching it
//! (`routes::stream`). A showtime nobody watches costs nothing but a subject match.
//!
//! What the hub holds is bounded by its watchers. A showtime's entry lives exactly as long as
//! some [`Subscription`] to it (or a watcher still setting one up) does: the last one dropped,
//! whether its stream ended, its client hung up or its setup failed, removes the entry. Each
//! entry queues at most [`BACKLOG`] changes (the broadcast ring: a watcher that falls further
//! behind is sent a fresh snapshot instead) and [`BACKLOG`] events waiting for its state to
//! load (older ones are dropped; a gap they leave is noticed at the next event and reloaded).
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

use chrono::Utc;
use futures::StreamExt;
use marquee_domain::showtime::{SeatState, Showtime, ShowtimeEvent};
use marquee_domain::ShowtimeId;
use marquee_event_store::envelope::Envelope;
use marquee_event_store::writer::Writers;
use marquee_nats::Namespace;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Changes a slow watcher may fall behind by before it is sent a fresh snapshot instead; also
/// the most events kept for an entry whose state is loading.
pub const BACKLOG: usize = 256;

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
    pending: VecDeque<Envelope>,
    /// Watchers subscribed or setting up; the entry goes with the last.
    watchers: usize,
    /// The statuses watchers were last sent, kept while a copy that missed an event reloads,
    /// so the reload can send what changed meanwhile.
    sent: Option<Vec<(String, &'static str)>>,
    sender: broadcast::Sender<Arc<Change>>,
}

/// A watcher's changes. Dropping it (the stream ends, the client hangs up) leaves the hub.
pub struct Subscription {
    changes: broadcast::Receiver<Arc<Change>>,
    _watcher: Watcher,
}

impl Subscription {
    /// The next change; `Lagged` when this watcher fell more than [`BACKLOG`] behind.
    pub async fn recv(&mut self) -> Result<Arc<Change>, broadcast::error::RecvError> {
        self.changes.recv().await
    }
}

/// Counts one watcher of a showtime while it lives: from the start of its setup, so that a
/// setup that fails or is abandoned (the client hung up while the state loaded) leaves too.
struct Watcher {
    hub: LiveSeats,
    id: Uuid,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut watched = self.hub.watched.lock().expect("lock poisoned");
        if let Some(entry) = watched.get_mut(&self.id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                watched.remove(&self.id);
            }
        }
    }
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

    /// Showtimes with an entry in the hub (watched, or a watcher setting up).
    pub fn entries(&self) -> usize {
        self.watched.lock().expect("lock poisoned").len()
    }

    /// What the hub holds queued for a showtime: changes not yet taken by every watcher, and
    /// events waiting for its state to load.
    pub fn queued(&self, id: Uuid) -> usize {
        let watched = self.watched.lock().expect("lock poisoned");
        watched
            .get(&id)
            .map_or(0, |w| w.sender.len() + w.pending.len())
    }

    /// Starts watching a showtime (or joins its watchers): `snapshot` reads the current copy,
    /// and the subscription gets every change after it. `None` for an unknown showtime.
    pub async fn watch<T>(
        &self,
        writers: &Writers,
        id: Uuid,
        snapshot: impl Fn(&Showtime, usize) -> T,
    ) -> Result<Option<(T, Subscription)>, marquee_event_store::error::StoreError> {
        // Whatever happens from here (a failed load, this future dropped midway), dropping
        // the watcher takes it out of the hub.
        let watcher = self.enter(id);
        // A missed event may take the copy away between loading and joining: load again.
        for _ in 0..3 {
            if let Some((value, changes)) = self.join(id, &snapshot) {
                let _watcher = watcher;
                return Ok(Some((value, Subscription { changes, _watcher })));
            }
            if !self.load(writers, id).await? {
                return Ok(None);
            }
        }
        Err(marquee_event_store::error::StoreError::Other(
            "the live seat map keeps missing events".into(),
        ))
    }

    /// Counts a watcher of `id`, adding the showtime (not loaded yet) when it is new.
    fn enter(&self, id: Uuid) -> Watcher {
        let mut watched = self.watched.lock().expect("lock poisoned");
        let entry = watched.entry(id).or_insert_with(|| Watched {
            copy: None,
            pending: VecDeque::new(),
            watchers: 0,
            sent: None,
            sender: broadcast::channel(BACKLOG).0,
        });
        entry.watchers += 1;
        Watcher {
            hub: self.clone(),
            id,
        }
    }

    /// The snapshot and a receiver of a loaded showtime, atomically.
    fn join<T>(
        &self,
        id: Uuid,
        snapshot: &impl Fn(&Showtime, usize) -> T,
    ) -> Option<(T, broadcast::Receiver<Arc<Change>>)> {
        let watched = self.watched.lock().expect("lock poisoned");
        let entry = watched.get(&id)?;
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
    ) -> Result<bool, marquee_event_store::error::StoreError> {
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
        let Some(copy) = entry.copy.as_mut() else {
            entry.wait(envelope);
            return None;
        };
        match copy.apply(&envelope) {
            Ok(changes) => {
                send(&entry.sender, changes);
                None
            }
            Err(()) => {
                entry.sent = entry.copy.take().map(|c| c.statuses);
                entry.wait(envelope);
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

impl Watched {
    /// Keeps an event for when the state has loaded; past [`BACKLOG`] the oldest goes (the
    /// most likely to be in the state the load reads).
    fn wait(&mut self, envelope: Envelope) {
        if self.pending.len() >= BACKLOG {
            self.pending.pop_front();
        }
        self.pending.push_back(envelope);
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
        // No receiver is fine: the last watcher is leaving and takes the entry with it.
        let _ = sender.send(Arc::new(change));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(showtime: Uuid, sequence: i64) -> Envelope {
        Envelope {
            position: sequence,
            tx_id: "1".into(),
            aggregate_type: "Showtime".into(),
            aggregate_id: showtime.to_string(),
            sequence,
            event_type: "SeatsHeld".into(),
            event_version: "1".into(),
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_watcher_that_leaves_during_setup_takes_the_showtime_out_of_the_hub() {
        let hub = LiveSeats::default();
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        let first = hub.enter(one);
        let second = hub.enter(one);
        let other = hub.enter(two);

        drop(first);
        assert_eq!(hub.entries(), 2, "one watcher of the showtime is left");
        drop((second, other));

        assert_eq!(hub.entries(), 0);
    }

    #[test]
    fn events_for_a_showtime_whose_state_never_loads_queue_no_more_than_the_backlog() {
        let hub = LiveSeats::default();
        let showtime = Uuid::new_v4();
        let _stuck = hub.enter(showtime);

        for sequence in 1..=(4 * BACKLOG as i64) {
            hub.receive(envelope(showtime, sequence));
        }

        assert_eq!(hub.queued(showtime), BACKLOG);
    }
}
