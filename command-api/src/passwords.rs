//! Passwords: the length rule, and argon2id hashing and checking, a few at a time.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes). Each
//! run holds its 19 MiB on a blocking thread, and tokio starts up to 512 of those: a burst of
//! logins or registrations from many addresses (which per-address rate limits do not stop)
//! would take gigabytes. [`Hashes`] lets a bounded number run at once, by default one per core
//! (more would only share the cores); the excess waits briefly in line, then is answered
//! `503 overloaded` with `Retry-After` before any work is done.

use crate::error::ApiError;
use anyhow::{bail, Context};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Fewest characters of a password.
pub const MIN_CHARS: usize = 8;
/// Most characters of a password: argon2 takes any length, but hashing megabytes is work an
/// attacker would choose.
pub const MAX_CHARS: usize = 1024;

/// Whether a new password has an accepted length, in characters.
pub fn length_is_valid(password: &str) -> bool {
    (MIN_CHARS..=MAX_CHARS).contains(&password.chars().count())
}

/// How long the excess waits for a hash to finish before it is answered `503`, by default: a
/// login that waits longer is likely retried by its user anyway.
pub const DEFAULT_HASH_WAIT: Duration = Duration::from_secs(2);

/// What the Retry-After of a refused hash says, in seconds.
const RETRY_AFTER: u64 = 1;

/// The bound on password hashing: `MARQUEE_MAX_HASHES` and `MARQUEE_HASH_WAIT_MS`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HashLimits {
    /// Hashes or checks running at once.
    pub at_once: usize,
    /// How long one more waits for its turn before it is refused.
    pub wait: Duration,
}

impl Default for HashLimits {
    fn default() -> Self {
        Self {
            at_once: std::thread::available_parallelism().map_or(1, usize::from),
            wait: DEFAULT_HASH_WAIT,
        }
    }
}

impl HashLimits {
    /// Parses the two settings; unset ones keep their default.
    pub fn from_settings(at_once: Option<&str>, wait_ms: Option<&str>) -> anyhow::Result<Self> {
        let mut limits = Self::default();
        if let Some(v) = at_once {
            limits.at_once = v
                .trim()
                .parse()
                .with_context(|| format!("MARQUEE_MAX_HASHES must be a whole number, got {v:?}"))?;
            // Unbounded hashing is what the bound is for; there is no "off".
            if limits.at_once == 0 {
                bail!("MARQUEE_MAX_HASHES must be at least 1");
            }
        }
        if let Some(v) = wait_ms {
            let ms: u64 = v.trim().parse().with_context(|| {
                format!("MARQUEE_HASH_WAIT_MS must be a whole number, got {v:?}")
            })?;
            limits.wait = Duration::from_millis(ms);
        }
        Ok(limits)
    }
}

/// Hashes and checks passwords, at most [`HashLimits::at_once`] at a time. Cloning shares the
/// bound.
#[derive(Clone)]
pub struct Hashes {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Hashes {
    pub fn new(limits: HashLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.at_once)),
            wait: limits.wait,
        }
    }

    /// Hashes a new password with argon2id and a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
        })
        .await
    }

    /// Checks a password against a stored hash. With no hash (unknown email) it checks against
    /// a dummy one, through the same bound, so that both failures take the same time and
    /// answer the same, under load too.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        self.run(move || {
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
            let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("bad hash: {e}"))?;
            let ok = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known)
        })
        .await
    }

    /// Runs `work` on a blocking thread once a permit is free, or refuses after the wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.permit().await?;
        let done = tokio::task::spawn_blocking(move || {
            // The permit lives on the thread, not in the request: a client that hangs up does
            // not free the place of work that is still running.
            let _running = Running::start(permit);
            work()
        })
        .await
        .context("password hashing task failed")?;
        Ok(done?)
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(permit) => Ok(permit.context("the hashing semaphore is never closed")?),
            Err(_) => {
                metrics::counter!("marquee_requests_shed_total", "reason" => "password_hashes")
                    .increment(1);
                Err(ApiError::Overloaded(
                    "too many passwords are being checked at once; retry shortly".into(),
                    RETRY_AFTER,
                ))
            }
        }
    }
}

/// One hash at work: holds its permit and counts itself in
/// `marquee_password_hashes_in_progress` until it ends, even by panic.
struct Running(#[allow(dead_code)] OwnedSemaphorePermit);

impl Running {
    fn start(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("marquee_password_hashes_in_progress").increment(1.0);
        Self(permit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        metrics::gauge!("marquee_password_hashes_in_progress").decrement(1.0);
    }
}

/// An argon2id hash of a random string, used for timing-equal failures.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7Vk3w8lvmxYcnUxq2bN5Fq7mUu9yd3JbSxPz1mO9Jv4";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hashes(at_once: usize, wait: Duration) -> Hashes {
        Hashes::new(HashLimits { at_once, wait })
    }

    #[tokio::test]
    async fn passwords_verify_and_unknown_users_fail_the_same_way() {
        let hashes = Hashes::new(HashLimits::default());
        let hash = hashes.hash("correct horse".into()).await.unwrap();
        assert!(hashes
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!hashes.verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(!hashes.verify("correct horse".into(), None).await.unwrap());
    }

    /// Work that takes `ms` and records how many such runs overlapped at most.
    fn slow_work(
        ms: u64,
        now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> impl FnOnce() -> anyhow::Result<()> + Send + 'static {
        move || {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_hashes_run_at_once_than_the_bound_and_the_excess_is_refused_with_retry_after()
    {
        let hashes = hashes(2, Duration::from_millis(150));
        let (now, peak) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let runs = (0..12).map(|_| hashes.run(slow_work(100, now.clone(), peak.clone())));
        let answers = futures::future::join_all(runs).await;
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "the bound is reached, never passed"
        );
        // 12 runs of 100 ms, 2 at a time, with 150 ms of patience: the first two rounds start
        // in time, the rest cannot.
        let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
        assert!(
            (6..=10).contains(&refused.len()),
            "{} refused",
            refused.len()
        );
        for e in refused {
            assert!(matches!(e, ApiError::Overloaded(_, 1)), "{e:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_whose_caller_gave_up_keeps_its_place_until_it_ends() {
        let hashes = hashes(1, Duration::from_millis(100));
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let caller = tokio::spawn({
            let hashes = hashes.clone();
            async move {
                let work = move || {
                    started_tx.send(()).expect("the test waits for this");
                    release_rx.recv().ok();
                    Ok(())
                };
                hashes.run(work).await
            }
        });
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .unwrap()
            .expect("the hash starts");
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        let refused = hashes.run(|| Ok(())).await;
        assert!(
            matches!(refused, Err(ApiError::Overloaded(..))),
            "the abandoned hash still runs, so it still holds its place"
        );
        release.send(()).unwrap();
        assert!(
            hashes.run(|| Ok(())).await.is_ok(),
            "its place is free once it ends"
        );
    }

    #[test]
    fn the_bound_defaults_to_the_cores_and_cannot_be_turned_off() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            HashLimits::from_settings(None, None).unwrap().at_once,
            cores
        );
        let set = HashLimits::from_settings(Some("3"), Some("250")).unwrap();
        assert_eq!(
            set,
            HashLimits {
                at_once: 3,
                wait: Duration::from_millis(250)
            }
        );
        assert!(HashLimits::from_settings(Some("0"), None).is_err());
        assert!(HashLimits::from_settings(Some("many"), None).is_err());
        assert!(HashLimits::from_settings(None, Some("soon")).is_err());
    }

    #[test]
    fn passwords_of_8_to_1024_characters_are_accepted() {
        assert!(!length_is_valid("seven77"));
        assert!(length_is_valid("eight888"));
        assert!(length_is_valid(&"é".repeat(1024)), "characters, not bytes");
        assert!(!length_is_valid(&"x".repeat(1025)));
    }
}
