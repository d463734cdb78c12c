//! Admission: what this process takes on, and what it sheds at once.
//!
//! Past saturation, every request admitted makes every other one later: a hot showtime's
//! queue, the database pool and the cores are shared. So a request is answered `503
//! overloaded` with `Retry-After` at once, before its token is checked or its body read
//! (which costs a small part of what serving it would), when either
//!
//! - `MARQUEE_MAX_IN_FLIGHT` requests are already in progress, or
//! - `MARQUEE_MAX_LAG_MS` is set (it is off by default) and the process is running late: its
//!   runtime takes longer than that to get to work that is ready (see [`Lag`]). Then a share
//!   of new requests is shed, growing from none at that lag to all at twice it.
//!
//! The second is what keeps latency when the cores, not the cap, are the limit. A request
//! that arrives while the runtime is behind waits, before anything here sees it, for the
//! runtime to get round to reading it; so do the requests already in progress, at each step.
//! That wait is the runtime's lag, and no count of requests in progress measures it: with
//! 1,024 in progress a hot showtime's open loop at 120% of saturation had its admitted
//! requests at over a second at p99, most of it before admission. It is off by default
//! because clients that wait out `Retry-After` leave the cores idle meanwhile: every closed
//! loop saturates the cores, so with it on a closed loop is shed and waits (BENCHMARKS.md).
//!
//! A request counts from the moment it passes here until its handler has answered (a seat-map
//! stream counts only until its headers are sent). Health checks and metrics are never shed,
//! so an overloaded process still reports on itself.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a shed client is asked to wait before it tries again, in seconds.
const RETRY_AFTER: u64 = 1;

/// How often the runtime's lag is measured: the probe asks to wake this much later.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// The weight of each new lag reading in the smoothed lag. At one reading per
/// [`PROBE_EVERY`] or more, a lasting change shows within a few tens of milliseconds, and
/// one late wake-up alone does not shed.
const SMOOTHING: f64 = 0.25;

/// The gate of one router: shared by every route.
#[derive(Clone, Default)]
pub struct Gate(Option<Arc<Limits>>);

struct Limits {
    /// `None` admits any number at once.
    in_flight: Option<Semaphore>,
    /// `None` never sheds for lag.
    lag: Option<Lag>,
}

impl Gate {
    /// A gate with the given caps; `None` for both admits everything. The lag is measured
    /// on the runtime this is called on (the one that will serve), if there is one, by a task
    /// that ends when the last clone of the gate is dropped.
    pub fn new(max_in_flight: Option<usize>, max_lag: Option<Duration>) -> Self {
        if max_in_flight.is_none() && max_lag.is_none() {
            return Self(None);
        }
        let limits = Arc::new(Limits {
            in_flight: max_in_flight.map(Semaphore::new),
            lag: max_lag.map(Lag::new),
        });
        if limits.lag.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(probe(Arc::downgrade(&limits)));
            }
        }
        Self(Some(limits))
    }
}

/// How late the serving runtime runs, smoothed, against the most it may.
///
/// A probe task asks to wake every [`PROBE_EVERY`], then goes to the back of the runtime's
/// queue, and notes how much later than asked it got its turn. A connection whose request
/// has arrived waits the same way, for the runtime to look for ready connections and then
/// behind every task ready before it: the probe's lateness is how long a new request waits
/// to be read, and about how long each request in progress waits at each of its steps. On an
/// idle runtime it is about a millisecond (the timer's resolution).
struct Lag {
    max: Duration,
    /// The smoothed lag, in microseconds.
    micros: AtomicU64,
}

impl Lag {
    fn new(max: Duration) -> Self {
        Self {
            max,
            micros: AtomicU64::new(0),
        }
    }

    fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Folds one reading into the smoothed lag.
    fn note(&self, reading: Duration) {
        let previous = self.micros.load(Ordering::Relaxed) as f64;
        let next = previous + SMOOTHING * (reading.as_micros() as f64 - previous);
        self.micros.store(next as u64, Ordering::Relaxed);
        metrics::gauge!("marquee_runtime_lag_seconds").set(next / 1e6);
    }

    /// The share of new requests to shed now: none up to the most lag allowed, then growing
    /// in proportion, all from twice it.
    fn share_to_shed(&self) -> f64 {
        let (lag, max) = (self.now().as_secs_f64(), self.max.as_secs_f64());
        ((lag - max) / max).clamp(0.0, 1.0)
    }
}

/// Measures the lag of the runtime it runs on until the gate is gone.
async fn probe(limits: Weak<Limits>) {
    loop {
        let asked = Instant::now();
        tokio::time::sleep(PROBE_EVERY).await;
        // A task woken by the timer may run at once, ahead of the queue (tokio gives a task
        // woken on its own worker the next turn); one that yields goes to the back of it,
        // as a connection whose request has arrived does.
        tokio::task::yield_now().await;
        let reading = asked.elapsed().saturating_sub(PROBE_EVERY);
        let Some(limits) = limits.upgrade() else {
            return;
        };
        if let Some(lag) = &limits.lag {
            lag.note(reading);
        }
    }
}

/// Paths that are always served: the process's own health and metrics.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Runs the request if there is room, answers `503 overloaded` at once if not.
pub async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Some(limits) = gate.0 else {
        return next.run(request).await;
    };
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(lag) = &limits.lag {
        let share = lag.share_to_shed();
        if share > 0.0 && rand::thread_rng().gen_bool(share) {
            return shed("lag");
        }
    }
    let Some(in_flight) = &limits.in_flight else {
        return next.run(request).await;
    };
    let Ok(_permit) = in_flight.try_acquire() else {
        return shed("in_flight");
    };
    next.run(request).await
}

fn shed(reason: &'static str) -> Response {
    metrics::counter!("marquee_requests_shed_total", "reason" => reason).increment(1);
    ApiError::Overloaded(
        "the engine is working on as many requests as it can; retry shortly".into(),
        RETRY_AFTER,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_shed_up_to_the_most_lag_and_everything_from_twice_it() {
        let lag = Lag::new(Duration::from_millis(10));
        let share_at = |ms: u64| {
            lag.micros.store(ms * 1000, Ordering::Relaxed);
            lag.share_to_shed()
        };
        assert_eq!(share_at(0), 0.0);
        assert_eq!(share_at(10), 0.0);
        assert!((share_at(15) - 0.5).abs() < 1e-9);
        assert_eq!(share_at(20), 1.0);
        assert_eq!(share_at(500), 1.0);
    }

    #[test]
    fn one_late_reading_moves_the_smoothed_lag_by_a_share_of_it() {
        let lag = Lag::new(Duration::from_millis(10));
        lag.note(Duration::from_millis(40));
        assert_eq!(lag.now(), Duration::from_millis(10));
        for _ in 0..40 {
            lag.note(Duration::from_millis(40));
        }
        assert!(lag.now() > Duration::from_millis(39));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_probe_sees_a_runtime_behind_with_its_work_and_stops_with_the_gate() {
        let gate = Gate::new(None, Some(Duration::from_millis(10)));
        let limits = Arc::downgrade(gate.0.as_ref().expect("a gate with a lag cap"));
        let lag = |gate: &Gate| gate.0.as_ref().unwrap().lag.as_ref().unwrap().now();
        // A few readings of an idle runtime.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let idle = lag(&gate);
        // Twenty tasks ready at once, each taking 2 ms of the only thread per turn: a task
        // that goes to the back of the queue waits about 40 ms for its next turn.
        let busy = (0..20).map(|_| {
            tokio::spawn(async {
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(2));
                    tokio::task::yield_now().await;
                }
            })
        });
        futures::future::join_all(busy).await;
        let behind = lag(&gate);
        assert!(behind > Duration::from_millis(15), "{behind:?}");
        assert!(behind > idle, "{behind:?} behind, {idle:?} idle");
        drop(gate);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(limits.upgrade().is_none(), "the probe let go of the gate");
    }
}
