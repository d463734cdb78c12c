//! Readiness: whether PostgreSQL and NATS answer, checked at most once per [`FRESH_FOR`].
//!
//! `/readyz` is never shed by admission (an overloaded process must still report on itself)
//! and needs no token, yet each check takes a connection of the pool that serves bookings.
//! Checked on every call, anyone calling it in a loop would compete with customers for those
//! connections. So one answer serves every caller for a second: a caller that finds it stale
//! checks again while the callers behind it wait for that check rather than start their own.
//! A second is short enough that a probe sees a lost dependency within about one.

use serde::Serialize;
use sqlx::PgPool;
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use utoipa::ToSchema;

/// How long one check's answer is served.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The state of each dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Readiness {
    pub postgres: bool,
    pub nats: bool,
}

impl Readiness {
    /// Both dependencies answer.
    pub fn ready(&self) -> bool {
        self.postgres && self.nats
    }
}

/// Asks PostgreSQL (through the shared pool) and looks at the NATS connection.
pub async fn check(pool: &PgPool, nats: Option<&async_nats::Client>) -> Readiness {
    metrics::counter!("marquee_readiness_checks_total").increment(1);
    Readiness {
        postgres: sqlx::query("select 1").execute(pool).await.is_ok(),
        nats: nats
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected),
    }
}

/// The last answer and when its check started.
pub struct Cached {
    fresh_for: Duration,
    // An async mutex held across the check: that is what makes callers arriving during a
    // check wait for its answer instead of checking too. A caller that gives up while it
    // checks releases the lock, and the next one checks.
    last: Mutex<Option<(Instant, Readiness)>>,
}

impl Default for Cached {
    fn default() -> Self {
        Self::new(FRESH_FOR)
    }
}

impl Cached {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: Mutex::new(None),
        }
    }

    /// The last answer if it is fresh, else the answer of `check`, kept for the next callers.
    pub async fn get<F, Fut>(&self, check: F) -> Readiness
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Readiness>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = *last {
            if at.elapsed() < self.fresh_for {
                return answer;
            }
        }
        // Dated from the start of the check: the answer describes that moment, so it is
        // never served more than `fresh_for` after what it saw, however long the check took.
        let started = Instant::now();
        let answer = check().await;
        *last = Some((started, answer));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A check that counts its calls and reports `up`, taking `takes` of (paused) time.
    fn counted(
        up: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
        takes: Duration,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Readiness> + Send>> {
        move || {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                let up = up.load(Ordering::SeqCst);
                Readiness {
                    postgres: up,
                    nats: true,
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_dependency_shows_once_the_answer_is_a_second_old() {
        let cache = Cached::default();
        let up = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let get = || cache.get(counted(up.clone(), calls.clone(), Duration::ZERO));
        assert!(get().await.ready());
        up.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(get().await.ready(), "a fresh answer is served as it is");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!get().await.ready(), "a second-old answer is checked again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_arriving_during_a_check_wait_for_it_instead_of_checking() {
        let cache = Arc::new(Cached::default());
        let up = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let callers = (0..100).map(|_| {
            let (cache, check) = (
                cache.clone(),
                counted(up.clone(), calls.clone(), Duration::from_millis(300)),
            );
            tokio::spawn(async move { cache.get(check).await })
        });
        for answer in futures::future::join_all(callers).await {
            assert!(answer.expect("a caller finishes").ready());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one check for all of them");
    }
}
