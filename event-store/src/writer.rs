//! The per-showtime writer: one task per active showtime owns its state in memory and
//! serializes every command for it.
//!
//! A hot showtime gets thousands of holds at once. Load-decide-append-retry collapses there
//! (every contender reloads and most appends lose the race), so instead each showtime has one
//! task that drains its queue, decides every queued command against the in-memory state,
//! appends all resulting events in ONE transaction, and only then answers each caller. The
//! events table's `(aggregate_type, aggregate_id, sequence)` key stays the backstop: if another
//! process wrote the showtime meanwhile, the whole batch fails, the writer reloads and decides
//! the batch again, and callers never see it.
//!
//! The queue is bounded: when it is full the caller is told at once ([`WriteError::Overloaded`])
//! instead of waiting. A writer with nothing to do for [`IDLE_AFTER`] goes away, and so does
//! the least recently used idle one when starting another would pass the cap on writers
//! ([`crate::writer_registry`]). Readers start no writer for a showtime that no longer takes
//! holds, nor for one that does not exist ([`Writers::read`]): any number of anonymous reads
//! of old showtimes cost one load each, not a writer each.
//!
//! The writers (and their committer) run on a thread of their own, with a database pool of
//! their own, not among the HTTP tasks. A writer is the one place all of a hot showtime's
//! commands pass through, and it waits on the database several times a batch; on the shared
//! runtime each of those waits ended at the back of a run queue holding a task per open
//! connection (a thousand under a spike), and the reactor that saw the database's answer was
//! itself polled only between those tasks. So every command's latency grew with the number of
//! connections, not with the work. On its own thread a writer is woken as soon as the
//! answer arrives (the operating system favours a thread that mostly sleeps), and the HTTP
//! tasks keep the runtime's workers.

use crate::append::{self, Appender};
use crate::error::StoreError;
use crate::event_store::{EventStore, LoadedShowtime};
use crate::metadata::Metadata;
use crate::reservation_cache::{Owner, ReservationCache};
use crate::writer_registry::{Registry, DEFAULT_MAX_WRITERS};
use marquee_domain::showtime::{Showtime, ShowtimeCommand, ShowtimeError, ShowtimeEvent};
use marquee_domain::{ReservationId, ShowtimeId};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_util::sync::CancellationToken;

/// A writer with an empty queue for this long stops and frees its memory.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);
/// Most commands decided and appended together.
const MAX_BATCH: usize = 512;
/// Events between two snapshots of a showtime, unless configured otherwise: about 100 ms of
/// folding saved at a start for each one taken.
pub const DEFAULT_SNAPSHOT_EVERY: usize = 10_000;
/// How often a batch is decided again after losing races to another process.
const MAX_ATTEMPTS: usize = 8;
/// While the database seems out of reach, how long a batch may wait for a connection before
/// it is answered `Unavailable`.
const OUTAGE_PROBE: Duration = Duration::from_millis(250);

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A business rule refused it; nothing was written.
    #[error(transparent)]
    Rejected(#[from] ShowtimeError),
    /// The showtime's queue is full.
    #[error("the showtime has too many requests waiting")]
    Overloaded,
    /// The event store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Job {
    command: ShowtimeCommand,
    meta: Metadata,
    reply: oneshot::Sender<Result<Vec<ShowtimeEvent>, WriteError>>,
    /// Past this instant the caller is better served by a quick `503` than by an answer:
    /// the writer sheds the job unread. `None` for jobs that must never be shed.
    shed_after: Option<Instant>,
    /// When it was queued: how long jobs wait for their writer is a metric.
    queued_at: Instant,
}

/// What a writer's queue carries.
enum Message {
    Command(Box<Job>),
    /// Catch up with events another process appended, then answer.
    CatchUp(CatchUpReply),
}

/// Answers a catch-up request once the writer has caught up (or could not).
type CatchUpReply = oneshot::Sender<Result<(), StoreError>>;

/// A showtime as last committed, with the sequence of its last event.
#[derive(Clone, Debug)]
pub struct Committed {
    pub showtime: Showtime,
    pub version: usize,
}

/// The committed state of a showtime, shared with readers.
pub type SharedState = Arc<RwLock<Committed>>;

#[derive(Clone)]
struct Handle {
    queue: mpsc::Sender<Message>,
    state: SharedState,
    /// Set while the writer works on messages it took off its queue.
    busy: Arc<AtomicBool>,
    /// Tells the writer to stop (as when idle) to make room for another.
    stop: CancellationToken,
}

impl Handle {
    /// Nothing queued and nothing in flight. A message may still slip in right after this
    /// says so: a stopped writer serves what reached its queue before it ends, so nothing is
    /// lost, it only stops a little later.
    fn is_idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire) && self.queue.capacity() == self.queue.max_capacity()
    }
}

type Slot = Arc<OnceCell<Handle>>;

/// How showtime commands are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMode {
    /// One writer task per showtime, batching appends (the engine's way).
    Batched,
    /// Load, decide, append, retry on conflict, per command: the stock cqrs-es way, kept as
    /// the baseline the benchmarks compare against.
    Direct,
}

/// How often a direct write is tried before the caller is told to retry later.
const DIRECT_ATTEMPTS: usize = 50;

/// Most connections of the writers' own pool: the committer's groups in flight, a batch
/// appended alone, and catching up.
const WRITER_CONNECTIONS: u32 = append::IN_FLIGHT as u32 + 4;

/// All writers of this process.
#[derive(Clone)]
pub struct Writers {
    parts: Parts,
    /// The store of callers (loading a showtime for its writer, the direct path, readers).
    store: EventStore,
    /// How the direct path appends, on the callers' pool.
    direct: Appender,
    queue_capacity: usize,
    mode: WriterMode,
    max_wait: Option<Duration>,
    /// Where the writers run.
    thread: Arc<WriterThread>,
}

/// What the writer tasks share with [`Writers`].
#[derive(Clone)]
struct Parts {
    slots: Arc<Mutex<Registry<Slot>>>,
    /// Writer tasks alive (stopped ones count until they have served their last message).
    running: Arc<AtomicUsize>,
    /// The writers' store, on their own pool.
    store: EventStore,
    /// The owners of the holds this process's writers recorded or caught up with.
    reservations: Arc<ReservationCache>,
    /// How the writers append their batches (grouped when batched).
    appender: Appender,
    /// Events between two snapshots of a showtime's state (0: none are taken).
    snapshot_every: usize,
    /// Whether the database seemed out of reach at the writers' last try.
    outage: Arc<AtomicBool>,
}

/// The writers' runtime: one worker thread. It stops when the last [`Writers`] is dropped
/// (the writer tasks hold [`Parts`], not this).
struct WriterThread(Option<tokio::runtime::Runtime>);

impl WriterThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("marquee-writers")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // May run inside another runtime (a test's, the server's): do not wait.
            runtime.shutdown_background();
        }
    }
}

impl Writers {
    /// The writers of a process storing into `store`, on a thread and a pool of their own
    /// (same database as `store`). In direct mode they only keep the state readers see
    /// (commands take the stock path, run by their callers with one commit each).
    pub fn new(
        store: EventStore,
        queue_capacity: usize,
        mode: WriterMode,
    ) -> std::io::Result<Self> {
        let thread = WriterThread::start()?;
        // Created on the writers' runtime, so that its connections (opened by the writers
        // that use them) and its upkeep belong to that runtime's reactor.
        let inside = thread.handle().enter();
        let pool = crate::db::pool_options(WRITER_CONNECTIONS)
            .connect_lazy_with((*store.pool().connect_options()).clone());
        // The direct baseline stays the stock path: one commit per command.
        let appender = match mode {
            WriterMode::Batched => Appender::grouped(pool.clone()),
            WriterMode::Direct => Appender::alone(pool.clone()),
        };
        drop(inside);
        Ok(Self {
            parts: Parts {
                slots: Arc::new(Mutex::new(Registry::new(DEFAULT_MAX_WRITERS))),
                running: Default::default(),
                store: EventStore::new(pool),
                reservations: Default::default(),
                outage: Default::default(),
                appender,
                snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            },
            direct: Appender::alone(store.pool().clone()),
            store,
            queue_capacity,
            mode,
            max_wait: None,
            thread: Arc::new(thread),
        })
    }

    /// The showtime and customer of a reservation: known without asking the database when a
    /// writer of this process has seen its hold recorded and still remembers it (see
    /// [`crate::reservation_cache`]), else from its lookup row.
    pub async fn reservation_owner(
        &self,
        reservation: ReservationId,
    ) -> Result<Option<Owner>, StoreError> {
        match self.parts.reservations.get(reservation) {
            Some(known) => Ok(Some(known)),
            None => self.store.reservation_owner(reservation).await,
        }
    }

    /// Sheds commands that waited in a showtime's queue longer than `max_wait`: under more
    /// load than a showtime can take, a full queue alone would let every admitted command
    /// wait for the whole queue ahead of it. (Settling a payment is never shed.)
    /// `None` never sheds by time.
    pub fn shedding_after(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Lets at most `max` writers stay (see [`crate::writer_registry`]).
    pub fn capped_at(self, max: usize) -> Self {
        *self.parts.slots.lock().expect("lock poisoned") = Registry::new(max);
        self
    }

    /// Snapshots a showtime's state every `events` events (0: never), so that its writer
    /// starts from the latest snapshot rather than from the first event.
    pub fn snapshotting_every(mut self, events: usize) -> Self {
        self.parts.snapshot_every = events;
        self
    }

    /// How many writer tasks are alive in this process.
    pub fn running(&self) -> usize {
        self.parts.running.load(Ordering::Acquire)
    }

    /// Runs a command on a showtime and returns the events it recorded.
    pub async fn execute(
        &self,
        id: ShowtimeId,
        command: ShowtimeCommand,
        meta: Metadata,
    ) -> Result<Vec<ShowtimeEvent>, WriteError> {
        self.submit(id, command, meta, false).await
    }

    /// Like [`Writers::execute`], but waits for room in a full queue instead of refusing:
    /// for settling a payment that was already charged, which must never be shed.
    pub async fn settle(
        &self,
        id: ShowtimeId,
        command: ShowtimeCommand,
        meta: Metadata,
    ) -> Result<Vec<ShowtimeEvent>, WriteError> {
        self.submit(id, command, meta, true).await
    }

    async fn submit(
        &self,
        id: ShowtimeId,
        command: ShowtimeCommand,
        meta: Metadata,
        wait_for_room: bool,
    ) -> Result<Vec<ShowtimeEvent>, WriteError> {
        if self.mode == WriterMode::Direct {
            let meta = meta.caused_by(&command);
            return self.direct(id, command, meta).await;
        }
        let mut job = Job {
            meta: meta.caused_by(&command),
            command,
            reply: oneshot::channel().0,
            shed_after: self
                .max_wait
                .filter(|_| !wait_for_room)
                .map(|wait| Instant::now() + wait),
            queued_at: Instant::now(),
        };
        // A writer that has just gone idle closes its queue; the second try starts a new one.
        for _ in 0..2 {
            let Some(handle) = self.handle(id, None).await? else {
                return Err(ShowtimeError::NotFound.into());
            };
            let (reply, answer) = oneshot::channel();
            job.reply = reply;
            let message = Message::Command(Box::new(job));
            let sent = if wait_for_room {
                handle
                    .queue
                    .send(message)
                    .await
                    .map_err(|mpsc::error::SendError(m)| mpsc::error::TrySendError::Closed(m))
            } else {
                handle.queue.try_send(message)
            };
            match sent {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(StoreError::Other("the showtime writer stopped".into()).into())
                    })
                }
                Err(mpsc::error::TrySendError::Full(_)) => return Err(WriteError::Overloaded),
                Err(mpsc::error::TrySendError::Closed(Message::Command(j))) => job = *j,
                Err(mpsc::error::TrySendError::Closed(_)) => unreachable!("a command was sent"),
            }
        }
        Err(StoreError::Other("the showtime writer keeps stopping".into()).into())
    }

    /// The stock path: load the showtime, decide, append with its lookups in one transaction;
    /// on a conflict with another writer, start over.
    async fn direct(
        &self,
        id: ShowtimeId,
        command: ShowtimeCommand,
        meta: Metadata,
    ) -> Result<Vec<ShowtimeEvent>, WriteError> {
        let key = id.to_string();
        for _ in 0..DIRECT_ATTEMPTS {
            let (state, version) = self.store.load::<Showtime>(&key).await?;
            if !state.exists() {
                return Err(ShowtimeError::NotFound.into());
            }
            let events = state.decide(command.clone())?;
            if events.is_empty() {
                return Ok(events);
            }
            match self
                .direct
                .append(id, version, [(&events[..], &meta)])
                .await
            {
                Ok(_) => return Ok(events),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Overloaded)
    }

    /// The committed state of a showtime, or `None` if it was never scheduled. It includes
    /// every event stored when the call began, also those another process appended: one
    /// index lookup tells whether the writer must catch up first. Starts the showtime's
    /// writer if needed: for callers about to send it a command.
    pub async fn state(&self, id: ShowtimeId) -> Result<Option<SharedState>, StoreError> {
        let Some(handle) = self.handle(id, None).await? else {
            return Ok(None);
        };
        self.caught_up(id, handle).await.map(Some)
    }

    /// Like [`Writers::state`], for readers: the running writer's state if there is one, else
    /// the store's. A writer is started only for a showtime that still takes holds; a closed
    /// one (cancelled or started) is answered from one load of the store, and a showtime that
    /// does not exist from none at all, so that reading them costs no writer.
    pub async fn read(&self, id: ShowtimeId) -> Result<Option<SharedState>, StoreError> {
        let running = self
            .parts
            .slots
            .lock()
            .expect("lock poisoned")
            .get(id)
            .is_some();
        if running {
            return self.state(id).await;
        }
        let loaded = self.store.load_showtime(id).await?;
        if !loaded.showtime.exists() {
            return Ok(None);
        }
        if !loaded.showtime.takes_holds_at(crate::event_store::now()) {
            // No writer will snapshot a closed showtime: its readers do, once.
            self.snapshot_if_behind(id, &loaded);
            return Ok(Some(Arc::new(RwLock::new(Committed {
                showtime: loaded.showtime,
                version: loaded.version,
            }))));
        }
        let Some(handle) = self.handle(id, Some(loaded)).await? else {
            return Ok(None);
        };
        self.caught_up(id, handle).await.map(Some)
    }

    /// The writer's state once it has caught up with what the store held at the call.
    async fn caught_up(&self, id: ShowtimeId, handle: Handle) -> Result<SharedState, StoreError> {
        let stored = self
            .store
            .last_sequence(<Showtime as cqrs_es::Aggregate>::TYPE, &id.to_string())
            .await?;
        let known = handle.state.read().expect("lock poisoned").version;
        if stored > known {
            let (done, wait) = oneshot::channel();
            // A full queue already has a command in it, which catches up on its own conflict;
            // a closed one belonged to an idle writer. Either way, read what is there.
            if handle.queue.try_send(Message::CatchUp(done)).is_ok() {
                if let Ok(result) = wait.await {
                    result?;
                }
            }
        }
        Ok(handle.state)
    }

    /// The writer of a showtime, started if needed: from `loaded` if given (a state the caller
    /// has just read; a writer behind the store catches up before it reads or appends), else
    /// loaded from the store.
    async fn handle(
        &self,
        id: ShowtimeId,
        mut loaded: Option<LoadedShowtime>,
    ) -> Result<Option<Handle>, StoreError> {
        loop {
            let slot = self.slot(id);
            match slot.get_or_try_init(|| self.start(id, loaded.take())).await {
                // A writer that stopped unexpectedly leaves a closed queue behind: replace it
                // rather than fail this showtime until a restart.
                Ok(handle) if handle.queue.is_closed() => self.forget(id, &slot),
                Ok(handle) => return Ok(Some(handle.clone())),
                Err(StartError::Missing) => {
                    self.forget(id, &slot);
                    return Ok(None);
                }
                Err(StartError::Store(e)) => {
                    self.forget(id, &slot);
                    return Err(e);
                }
            }
        }
    }

    /// The slot of a showtime's writer, marked as used; a new one may make room by stopping
    /// the least recently used idle writers.
    fn slot(&self, id: ShowtimeId) -> Slot {
        let (slot, stopped) = self.parts.slots.lock().expect("lock poisoned").use_or_add(
            id,
            Slot::default,
            // A slot still starting is not idle: its caller waits for it.
            |slot| slot.get().is_some_and(Handle::is_idle),
        );
        for handle in stopped.iter().filter_map(|s| s.get()) {
            handle.stop.cancel();
        }
        slot
    }

    fn forget(&self, id: ShowtimeId, slot: &Slot) {
        let mut slots = self.parts.slots.lock().expect("lock poisoned");
        slots.remove_if(id, |s| Arc::ptr_eq(s, slot));
    }

    async fn start(
        &self,
        id: ShowtimeId,
        loaded: Option<LoadedShowtime>,
    ) -> Result<Handle, StartError> {
        let loaded = match loaded {
            Some(loaded) => loaded,
            None => self.store.load_showtime(id).await?,
        };
        if !loaded.showtime.exists() {
            // Not cached: a showtime scheduled a moment later must not meet a stale writer.
            return Err(StartError::Missing);
        }
        let snapshot = self.snapshot_if_behind(id, &loaded);
        let (queue, jobs) = mpsc::channel(self.queue_capacity);
        let handle = Handle {
            queue,
            busy: Default::default(),
            stop: CancellationToken::new(),
            state: Arc::new(RwLock::new(Committed {
                showtime: loaded.showtime.clone(),
                version: loaded.version,
            })),
        };
        let task = Writer {
            id,
            working: loaded.showtime,
            ahead: false,
            committed: handle.state.clone(),
            version: loaded.version,
            snapshot,
            parts: self.parts.clone(),
        };
        let alive = Alive::new(self.parts.running.clone());
        let life = (handle.busy.clone(), handle.stop.clone());
        self.thread.handle().spawn(task.run(jobs, life, alive));
        Ok(handle)
    }
}

impl Writers {
    /// Stores a snapshot of a showtime just loaded if its last one is at least
    /// [`Parts::snapshot_every`] events behind (or missing), in the background, so that the
    /// next start does not fold those events again. Returns the sequence of the showtime's
    /// latest snapshot, stored or asked for.
    fn snapshot_if_behind(&self, id: ShowtimeId, loaded: &LoadedShowtime) -> usize {
        if !snapshot_due(self.parts.snapshot_every, loaded.snapshot, loaded.version) {
            return loaded.snapshot;
        }
        let state = loaded.showtime.clone();
        tokio::spawn(store_snapshot(
            self.store.clone(),
            id,
            loaded.version,
            state,
        ));
        loaded.version
    }
}

/// Counts a writer task as running while it lives.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(running: Arc<AtomicUsize>) -> Self {
        let n = running.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!("marquee_writers_running").set(n as f64);
        Self(running)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("marquee_writers_running").set(n as f64);
    }
}

enum StartError {
    Missing,
    Store(StoreError),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

struct Writer {
    id: ShowtimeId,
    /// Where the current batch is decided; equal to `committed` between batches.
    working: Showtime,
    /// Whether `working` holds decisions that are not stored (a batch being decided, or one
    /// whose append failed): only then must it be copied back from `committed`.
    ahead: bool,
    committed: SharedState,
    /// Sequence of the last stored event.
    version: usize,
    /// Sequence of the latest snapshot stored (or asked for) by this showtime's writers.
    snapshot: usize,
    parts: Parts,
}

impl Writer {
    /// Serves the queue until idle for [`IDLE_AFTER`] or told to `stop`; `busy` is set while
    /// it works on messages taken off the queue. `_alive` counts it as running until it ends.
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Message>,
        (busy, stop): (Arc<AtomicBool>, CancellationToken),
        _alive: Alive,
    ) {
        loop {
            let first = tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
                _ = tokio::time::sleep(IDLE_AFTER) => break,
                _ = stop.cancelled() => break,
            };
            busy.store(true, Ordering::Release);
            let (batch, waiting) = take_batch(first, &mut queue);
            self.serve(batch, waiting).await;
            busy.store(false, Ordering::Release);
        }
        self.go_idle(queue).await;
    }

    /// Going idle: leave the map first so new callers start a fresh writer, then close the
    /// queue and finish what was already sent. A stopped writer has been taken out already,
    /// and a newer writer of the same showtime may be in its place: leave that one.
    async fn go_idle(mut self, mut queue: mpsc::Receiver<Message>) {
        let mine = |slot: &Slot| {
            slot.get()
                .is_some_and(|h| Arc::ptr_eq(&h.state, &self.committed))
        };
        self.parts
            .slots
            .lock()
            .expect("lock poisoned")
            .remove_if(self.id, mine);
        queue.close();
        while let Some(message) = queue.recv().await {
            match message {
                Message::Command(job) => self.serve(vec![*job], vec![]).await,
                Message::CatchUp(done) => self.serve(vec![], vec![done]).await,
            }
        }
    }

    async fn serve(&mut self, batch: Vec<Job>, waiting: Vec<CatchUpReply>) {
        if let Err(e) = self.reachable().await {
            for done in waiting {
                let _ = done.send(Err(e.duplicate()));
            }
            return fail(batch, e);
        }
        if !waiting.is_empty() {
            let result = self.catch_up().await;
            self.note_outage(result.as_ref().err());
            for done in waiting {
                let _ = done.send(result.as_ref().map(|_| ()).map_err(StoreError::duplicate));
            }
        }
        if !batch.is_empty() {
            self.process(batch).await;
        }
    }

    /// While the database seemed out of reach at the last try, first checks that a
    /// connection can be had within [`OUTAGE_PROBE`]: during an outage each batch is answered
    /// `Unavailable` at once, instead of after the pool's whole acquire timeout, which every
    /// command queued behind it would wait for again.
    async fn reachable(&self) -> Result<(), StoreError> {
        if !self.parts.outage.load(Ordering::Acquire) {
            return Ok(());
        }
        match tokio::time::timeout(OUTAGE_PROBE, self.parts.store.pool().acquire()).await {
            Ok(Ok(_connection)) => {
                self.parts.outage.store(false, Ordering::Release);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Unavailable(
                "no database connection within the outage probe".into(),
            )),
        }
    }

    /// Remembers whether `error` says the database is out of reach (see
    /// [`Writer::reachable`]).
    fn note_outage(&self, error: Option<&StoreError>) {
        if matches!(error, Some(StoreError::Unavailable(_))) {
            self.parts.outage.store(true, Ordering::Release);
        }
    }

    async fn process(&mut self, batch: Vec<Job>) {
        metrics::histogram!("marquee_writer_batch_size").record(batch.len() as f64);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let decided = self.decide_all(&batch);
            if attempt < MAX_ATTEMPTS && !records_any(&decided) {
                // A refusal (or a command with nothing to record) is only as good as the
                // state it was decided on: if another process appended to this showtime
                // meanwhile, catch up and decide again. Appends find out by themselves (the
                // key conflicts); refusals would not. So only a batch that records nothing
                // asks first. One that also appends needs no question: its first event takes
                // the sequence after the last one this writer knows, so the append succeeds
                // only if nobody else had written the showtime, which is what proves its
                // refusals were decided on current state.
                match self.is_behind().await {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Err(e) = self.catch_up().await {
                            self.reset();
                            self.note_outage(Some(&e));
                            return fail(batch, e);
                        }
                        continue;
                    }
                    Err(e) => {
                        self.reset();
                        self.note_outage(Some(&e));
                        return fail(batch, e);
                    }
                }
            }
            match self.append(&batch, &decided).await {
                Ok(()) => {
                    self.publish(&decided);
                    self.snapshot_if_due();
                    return answer(batch, decided);
                }
                Err(StoreError::Conflict) if attempt < MAX_ATTEMPTS => {
                    tracing::info!(showtime = %self.id, attempt, "another writer appended first; catching up");
                    if let Err(e) = self.catch_up().await {
                        // Drop the decisions of the batch that was not stored.
                        self.reset();
                        self.note_outage(Some(&e));
                        return fail(batch, e);
                    }
                }
                Err(e) => {
                    self.reset();
                    self.note_outage(Some(&e));
                    return fail(batch, e);
                }
            }
        }
    }

    /// Stores a snapshot of the committed state once [`Parts::snapshot_every`] events have
    /// passed since the last one. Written out off the writers' thread, and stored in the
    /// background: a snapshot that fails is only a slower start, and the next one comes as
    /// due.
    fn snapshot_if_due(&mut self) {
        if self.ahead || !snapshot_due(self.parts.snapshot_every, self.snapshot, self.version) {
            return;
        }
        self.snapshot = self.version;
        let state = self.working.clone();
        tokio::spawn(store_snapshot(
            self.parts.store.clone(),
            self.id,
            self.version,
            state,
        ));
    }

    /// Forgets decisions that were not stored: `working` restarts from `committed`.
    fn reset(&mut self) {
        self.working = self
            .committed
            .read()
            .expect("lock poisoned")
            .showtime
            .clone();
        self.ahead = false;
    }

    /// Whether the store holds events of this showtime that this writer has not seen.
    async fn is_behind(&self) -> Result<bool, StoreError> {
        let stored = self
            .parts
            .store
            .last_sequence(<Showtime as cqrs_es::Aggregate>::TYPE, &self.id.to_string())
            .await?;
        Ok(stored > self.version)
    }

    /// Decides every job in order, each against the state the earlier ones left.
    fn decide_all(&mut self, batch: &[Job]) -> Vec<Result<Vec<ShowtimeEvent>, ShowtimeError>> {
        batch
            .iter()
            .map(|job| {
                let events = self.working.decide(job.command.clone())?;
                for e in &events {
                    cqrs_es::Aggregate::apply(&mut self.working, e.clone());
                }
                self.ahead |= !events.is_empty();
                Ok(events)
            })
            .collect()
    }

    async fn append(
        &mut self,
        batch: &[Job],
        decided: &[Result<Vec<ShowtimeEvent>, ShowtimeError>],
    ) -> Result<(), StoreError> {
        let recorded = batch
            .iter()
            .zip(decided)
            .filter_map(|(job, d)| d.as_ref().ok().map(|events| (events.as_slice(), &job.meta)));
        let appended = self
            .parts
            .appender
            .append(self.id, self.version, recorded)
            .await?;
        self.version += appended;
        Ok(())
    }

    fn publish(&mut self, decided: &[Result<Vec<ShowtimeEvent>, ShowtimeError>]) {
        self.remember_owners(decided.iter().flatten().flatten());
        let mut committed = self.committed.write().expect("lock poisoned");
        for events in decided.iter().flatten() {
            for e in events {
                cqrs_es::Aggregate::apply(&mut committed.showtime, e.clone());
            }
        }
        committed.version = self.version;
        // `working` made the same decisions: the two are equal again.
        self.ahead = false;
    }

    /// Tells the process whose the new holds among `events` are.
    fn remember_owners<'a>(&self, events: impl Iterator<Item = &'a ShowtimeEvent>) {
        let showtime = self.id;
        self.parts
            .reservations
            .insert(events.filter_map(|e| match e {
                ShowtimeEvent::SeatsHeld(h) => Some((
                    h.reservation_id,
                    Owner {
                        showtime,
                        customer: h.customer_id,
                    },
                )),
                _ => None,
            }));
    }

    /// Applies the events other processes appended since our last one. Also undoes the
    /// uncommitted decisions of a failed batch: `working` restarts from `committed`.
    ///
    /// With nothing new and nothing undecided, `working` is left as it is: a hot showtime's
    /// state can be large, and readers ask for a catch-up whenever they see
    /// the store a batch ahead of the committed state (the moment between a batch's commit
    /// and its publication here), so copying it each time cost several percent of the CPU.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let id = self.id.to_string();
        let newer = self
            .parts
            .store
            .events_after::<Showtime>(&id, self.version)
            .await?;
        let changed = !newer.is_empty();
        self.remember_owners(newer.iter().map(|(_, e)| e));
        let mut committed = self.committed.write().expect("lock poisoned");
        for (sequence, event) in newer {
            cqrs_es::Aggregate::apply(&mut committed.showtime, event);
            self.version = sequence;
        }
        committed.version = self.version;
        if changed || self.ahead {
            self.working = committed.showtime.clone();
            self.ahead = false;
        }
        Ok(())
    }
}

/// The commands queued behind `first`, up to [`MAX_BATCH`], and the catch-up requests among
/// them. A command that waited past its shedding time is answered `Overloaded` instead.
fn take_batch(
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
) -> (Vec<Job>, Vec<CatchUpReply>) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    let mut next = Some(first);
    let now = Instant::now();
    while let Some(message) = next.take() {
        match message {
            Message::Command(job) if job.shed_after.is_some_and(|t| now > t) => {
                metrics::counter!("marquee_commands_shed_total", "reason" => "waited").increment(1);
                let _ = job.reply.send(Err(WriteError::Overloaded));
            }
            Message::Command(job) => {
                metrics::histogram!("marquee_writer_queue_wait_seconds")
                    .record(now.saturating_duration_since(job.queued_at).as_secs_f64());
                batch.push(*job)
            }
            Message::CatchUp(done) => waiting.push(done),
        }
        if batch.len() < MAX_BATCH {
            next = queue.try_recv().ok();
        }
    }
    (batch, waiting)
}

/// Whether a showtime at `version` is due a snapshot, its latest being at `snapshot`, when
/// one is taken every `every` events (0: never).
fn snapshot_due(every: usize, snapshot: usize, version: usize) -> bool {
    every > 0 && version >= snapshot + every
}

/// Writes a showtime's state out (on a blocking thread: a large state takes milliseconds)
/// and stores it as its snapshot as of `version`. A failure is logged: it only makes the next
/// start slower.
async fn store_snapshot(store: EventStore, id: ShowtimeId, version: usize, state: Showtime) {
    let written = tokio::task::spawn_blocking(move || serde_json::to_value(&state)).await;
    let stored = match written {
        Ok(Ok(json)) => store.save_snapshot(id, version, json).await,
        Ok(Err(e)) => Err(StoreError::Other(e.to_string())),
        Err(e) => Err(StoreError::Other(e.to_string())),
    };
    match stored {
        Ok(()) => metrics::counter!("marquee_snapshots_total").increment(1),
        Err(e) => {
            tracing::warn!(showtime = %id, version, error = %e, "could not store a snapshot")
        }
    }
}

/// Whether any command of a batch has events to record.
fn records_any(decided: &[Result<Vec<ShowtimeEvent>, ShowtimeError>]) -> bool {
    decided
        .iter()
        .any(|d| d.as_ref().is_ok_and(|events| !events.is_empty()))
}

fn answer(batch: Vec<Job>, decided: Vec<Result<Vec<ShowtimeEvent>, ShowtimeError>>) {
    let rejected = decided.iter().filter(|d| d.is_err()).count();
    metrics::counter!("marquee_writer_commands_total", "outcome" => "accepted")
        .increment((decided.len() - rejected) as u64);
    metrics::counter!("marquee_writer_commands_total", "outcome" => "rejected")
        .increment(rejected as u64);
    for (job, result) in batch.into_iter().zip(decided) {
        // A caller that gave up has dropped its receiver; nothing to tell it.
        let _ = job.reply.send(result.map_err(WriteError::from));
    }
}

fn fail(batch: Vec<Job>, e: StoreError) {
    metrics::counter!("marquee_writer_commands_total", "outcome" => "failed")
        .increment(batch.len() as u64);
    for job in batch {
        let _ = job.reply.send(Err(e.duplicate().into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_run_on_their_own_thread_which_stops_with_the_last_handle() {
        let thread = WriterThread::start().expect("a runtime starts");
        let handle = thread.handle().clone();
        let name = handle
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("the task runs");
        assert_eq!(name.as_deref(), Some("marquee-writers"));
        assert_ne!(
            std::thread::current().name(),
            Some("marquee-writers"),
            "the caller is elsewhere"
        );

        // Dropped inside another runtime (as a test's or the server's state is): it must not
        // block or panic, and what was left on it stops.
        let (_keep, wait) = oneshot::channel::<()>();
        let waiting = handle.spawn(async move {
            let _ = wait.await;
        });
        drop(thread);
        let stopped = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the runtime stops at once");
        assert!(stopped.is_err_and(|e| e.is_cancelled()));
    }
}
