//! Configuration from environment variables, each with a working default.

use anyhow::{bail, Context};
use marquee_event_store::writer::DEFAULT_SNAPSHOT_EVERY;
use marquee_event_store::writer_registry::DEFAULT_MAX_WRITERS;
use std::net::SocketAddr;
use std::time::Duration;

/// Shortest accepted token signing secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Requests in flight past which the API sheds at once (see `crate::admission`): enough for
/// the hot-showtime benchmark's 1,000 clients in a closed loop to wait a little rather than
/// be shed, few enough that an admitted request does not queue behind seconds of work.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 1024;
/// Lag of the serving runtime, in milliseconds, past which the API sheds a share of new
/// requests (see `crate::admission`): 0, off. Shedding for lag keeps admitted requests fast
/// past saturation, but clients that wait out `Retry-After` leave the cores idle meanwhile:
/// with 5 ms the benchmark's closed loops on 100 showtimes lost 34% to 61% of their holds/s
/// (see BENCHMARKS.md), so it is for deployments that choose latency over throughput.
pub const DEFAULT_MAX_LAG_MS: u64 = 0;

/// Everything the engine reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`; the database is created if it does not exist.
    pub database_url: String,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `MARQUEE_HTTP_ADDR`.
    pub http_addr: SocketAddr,
    /// `MARQUEE_METRICS_ADDR`: when set, `/metrics` is served there only (by the API role) and
    /// not at `http_addr`, so it can be kept off the public network. Unset by default.
    pub metrics_addr: Option<SocketAddr>,
    /// `MARQUEE_NAMESPACE`: prefixes JetStream names so deployments sharing a NATS stay apart.
    pub namespace: String,
    /// `MARQUEE_HOLD_SECONDS`: how long a hold keeps its seats.
    pub hold_for: Duration,
    /// `MARQUEE_HOLD_COOLDOWN_SECONDS`: how long a customer whose holds on a showtime used up
    /// `hold_for` must hold nothing there before holding again. 0 lets them hold again as soon
    /// as their last hold ends; holding again still never extends a live hold.
    pub hold_cooldown: Duration,
    /// `MARQUEE_PAYMENT_PIN_SECONDS`: the most a payment in flight can keep a hold alive.
    pub payment_pin: Duration,
    /// `MARQUEE_ADMIN_EMAIL` and `MARQUEE_ADMIN_PASSWORD`: the bootstrap admin account.
    pub admin: Option<(String, String)>,
    /// `MARQUEE_JWT_SECRET`; when unset one is generated and kept in the database.
    pub jwt_secret: Option<String>,
    /// `MARQUEE_PAYMENT_LATENCY_MS`: how long the built-in test card processor takes.
    pub payment_latency: Duration,
    /// `MARQUEE_PAYMENT_TRANSIT_MS`: how long a charge takes to reach the built-in test card
    /// processor (it travels on even if the engine stops waiting), to try late charges.
    pub payment_transit: Duration,
    /// `MARQUEE_PAYMENT_TIMEOUT_MS`: how long a charge may take before its outcome counts as
    /// unknown; the reconciler settles such payments by asking the processor.
    pub payment_timeout: Duration,
    /// `MARQUEE_HEADER_TIMEOUT_MS`: how long a client may take to send a request's headers
    /// before its connection is closed.
    pub header_timeout: Duration,
    /// `MARQUEE_BODY_TIMEOUT_MS`: how long a request's body may take to arrive (`408` past it).
    pub body_timeout: Duration,
    /// `MARQUEE_REQUEST_TIMEOUT_MS`: how long an answer may take to be ready (`503` past it);
    /// longer than `payment_timeout`, so a slow charge is answered `payment-pending` instead.
    pub request_timeout: Duration,
    /// `MARQUEE_SHOWTIME_QUEUE`: commands one showtime may have waiting before the API sheds.
    pub showtime_queue: usize,
    /// `MARQUEE_MAX_WRITERS`: showtime writers (each holding its showtime's state in memory)
    /// this process keeps; starting one more stops the least recently used idle one.
    pub max_writers: usize,
    /// `MARQUEE_SNAPSHOT_EVERY`: events between two snapshots of a showtime's state, from
    /// which its writer starts instead of folding the whole log; 0 takes none.
    pub snapshot_every: usize,
    /// `MARQUEE_SHOWTIME_MAX_WAIT_MS`: the longest a command may wait in a showtime's queue
    /// before it is shed with `503 overloaded`; `None` (0) never sheds by time.
    pub showtime_max_wait: Option<Duration>,
    /// `MARQUEE_MAX_IN_FLIGHT`: requests this process works on at once; one more is answered
    /// `503 overloaded` at once, before any work. `None` (0) admits everything.
    pub max_in_flight: Option<usize>,
    /// `MARQUEE_MAX_LAG_MS`: how late the serving runtime may run before a share of new
    /// requests is shed (see `crate::admission`). `None` (0) never sheds for lag.
    pub max_lag: Option<Duration>,
    /// `MARQUEE_SHOWTIME_WRITER`: `batched` (the default) or `direct`, the stock
    /// load-decide-append-retry path, kept as the benchmark baseline.
    pub writer_mode: marquee_event_store::writer::WriterMode,
    /// `MARQUEE_RATE_LIMITS`: the limits on logging in, registering and booking; `None` (the
    /// setting `off`) turns them off, e.g. for load tests from one address.
    pub rate_limits: Option<crate::ratelimit::RateLimits>,
    /// `MARQUEE_PROXY_HOPS`: how many reverse proxies stand in front of the API. 0 (the
    /// default) means none: `X-Forwarded-For` is ignored and the TCP peer is the client.
    pub proxy_hops: usize,
    /// `MARQUEE_MAX_HASHES` and `MARQUEE_HASH_WAIT_MS`: password hashes run at once, and how
    /// long one more waits before it is refused (see `crate::passwords`).
    pub hash_limits: crate::passwords::HashLimits,
}

fn number(var: &impl Fn(&str) -> Option<String>, name: &str, default: u64) -> anyhow::Result<u64> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a whole number, got {v:?}")),
    }
}

/// Where the API listens unless `MARQUEE_HTTP_ADDR` says otherwise.
const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A setting where 0 means off.
fn optional(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

fn address(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    var(name)
        .map(|a| {
            a.parse()
                .with_context(|| format!("{name} is not an address: {a:?}"))
        })
        .transpose()
}

/// An email and a password.
type Account = (String, String);

/// The token signing secret and the bootstrap admin account, each checked.
fn secrets(
    var: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Option<String>, Option<Account>)> {
    let jwt_secret = var("MARQUEE_JWT_SECRET");
    if jwt_secret
        .as_ref()
        .is_some_and(|s| s.len() < MIN_JWT_SECRET_BYTES)
    {
        bail!("MARQUEE_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long");
    }
    let admin = match (var("MARQUEE_ADMIN_EMAIL"), var("MARQUEE_ADMIN_PASSWORD")) {
        (Some(e), Some(p)) => {
            crate::auth::check_admin_password(&p)?;
            Some((e, p))
        }
        (None, None) => None,
        _ => bail!("set both MARQUEE_ADMIN_EMAIL and MARQUEE_ADMIN_PASSWORD, or neither"),
    };
    Ok((jwt_secret, admin))
}

fn writer_mode(setting: Option<&str>) -> anyhow::Result<marquee_event_store::writer::WriterMode> {
    match setting {
        None | Some("batched") => Ok(marquee_event_store::writer::WriterMode::Batched),
        Some("direct") => Ok(marquee_event_store::writer::WriterMode::Direct),
        Some(other) => bail!("MARQUEE_SHOWTIME_WRITER must be batched or direct, got {other:?}"),
    }
}

/// A duration in milliseconds that must not be 0 (a limit that cannot be turned off).
fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> anyhow::Result<Duration> {
    match number(var, name, default)? {
        0 => bail!("{name} must be at least 1"),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// A number of things that must not be 0.
fn count(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: usize,
) -> anyhow::Result<usize> {
    match number(var, name, default as u64)? {
        0 => bail!("{name} must be at least 1"),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

impl Config {
    /// Rules between settings.
    fn check(&self) -> anyhow::Result<()> {
        if self.request_timeout <= self.payment_timeout {
            bail!(
                "MARQUEE_REQUEST_TIMEOUT_MS must be longer than MARQUEE_PAYMENT_TIMEOUT_MS, so \
                 that a slow charge is answered `payment-pending` rather than cut off"
            );
        }
        Ok(())
    }

    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; empty values count as unset.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let (jwt_secret, admin) = secrets(&var)?;
        let hold = number(&var, "MARQUEE_HOLD_SECONDS", 420)?;
        if hold == 0 {
            bail!("MARQUEE_HOLD_SECONDS must be at least 1");
        }
        let config = Self {
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "postgres://localhost/marquee".into()),
            nats_url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            http_addr: address(&var, "MARQUEE_HTTP_ADDR")?.unwrap_or(DEFAULT_HTTP_ADDR),
            metrics_addr: address(&var, "MARQUEE_METRICS_ADDR")?,
            namespace: var("MARQUEE_NAMESPACE").unwrap_or_else(|| "marquee".into()),
            hold_for: Duration::from_secs(hold),
            hold_cooldown: Duration::from_secs(number(&var, "MARQUEE_HOLD_COOLDOWN_SECONDS", 300)?),
            payment_pin: Duration::from_secs(number(&var, "MARQUEE_PAYMENT_PIN_SECONDS", 600)?),
            admin,
            jwt_secret,
            payment_latency: Duration::from_millis(number(&var, "MARQUEE_PAYMENT_LATENCY_MS", 0)?),
            payment_transit: Duration::from_millis(number(&var, "MARQUEE_PAYMENT_TRANSIT_MS", 0)?),
            payment_timeout: Duration::from_millis(number(
                &var,
                "MARQUEE_PAYMENT_TIMEOUT_MS",
                30_000,
            )?),
            header_timeout: millis(&var, "MARQUEE_HEADER_TIMEOUT_MS", 5_000)?,
            body_timeout: millis(&var, "MARQUEE_BODY_TIMEOUT_MS", 5_000)?,
            request_timeout: millis(&var, "MARQUEE_REQUEST_TIMEOUT_MS", 60_000)?,
            showtime_queue: number(&var, "MARQUEE_SHOWTIME_QUEUE", 4096)?.max(1) as usize,
            max_writers: count(&var, "MARQUEE_MAX_WRITERS", DEFAULT_MAX_WRITERS)?,
            snapshot_every: number(
                &var,
                "MARQUEE_SNAPSHOT_EVERY",
                DEFAULT_SNAPSHOT_EVERY as u64,
            )? as usize,
            showtime_max_wait: optional(number(&var, "MARQUEE_SHOWTIME_MAX_WAIT_MS", 0)?)
                .map(Duration::from_millis),
            max_in_flight: optional(number(
                &var,
                "MARQUEE_MAX_IN_FLIGHT",
                DEFAULT_MAX_IN_FLIGHT,
            )?)
            .map(|n| n as usize),
            max_lag: optional(number(&var, "MARQUEE_MAX_LAG_MS", DEFAULT_MAX_LAG_MS)?)
                .map(Duration::from_millis),
            writer_mode: writer_mode(var("MARQUEE_SHOWTIME_WRITER").as_deref())?,
            rate_limits: crate::ratelimit::RateLimits::from_setting(
                var("MARQUEE_RATE_LIMITS").as_deref(),
            )
            .context("MARQUEE_RATE_LIMITS")?,
            proxy_hops: number(&var, "MARQUEE_PROXY_HOPS", 0)? as usize,
            hash_limits: crate::passwords::HashLimits::from_settings(
                var("MARQUEE_MAX_HASHES").as_deref(),
                var("MARQUEE_HASH_WAIT_MS").as_deref(),
            )?,
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn every_setting_has_a_working_default() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, "postgres://localhost/marquee");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.namespace, "marquee");
        assert_eq!(c.hold_for, Duration::from_secs(420));
        assert_eq!(c.hold_cooldown, Duration::from_secs(300));
        assert!(c.admin.is_none() && c.jwt_secret.is_none());
        assert_eq!(c.rate_limits, Some(crate::ratelimit::RateLimits::default()));
        assert_eq!(c.proxy_hops, 0);
        assert_eq!(c.metrics_addr, None);
    }

    #[test]
    fn metrics_can_move_to_an_address_of_their_own() {
        let c = config(&[("MARQUEE_METRICS_ADDR", "127.0.0.1:9100")]).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(config(&[("MARQUEE_METRICS_ADDR", "private")]).is_err());
    }

    #[test]
    fn rate_limits_can_be_turned_off_or_changed() {
        assert_eq!(
            config(&[("MARQUEE_RATE_LIMITS", "off")])
                .unwrap()
                .rate_limits,
            None
        );
        let c = config(&[("MARQUEE_RATE_LIMITS", "login.account=3/m")]).unwrap();
        let limits = c.rate_limits.unwrap();
        assert_eq!(limits.login.account.count, 3);
        assert_eq!(
            limits.booking,
            crate::ratelimit::RateLimits::default().booking
        );
        assert!(config(&[("MARQUEE_RATE_LIMITS", "login=lots")]).is_err());
        assert!(config(&[("MARQUEE_PROXY_HOPS", "one")]).is_err());
    }

    #[test]
    fn showtime_writers_are_capped_and_snapshot_every_ten_thousand_events_unless_told() {
        let c = config(&[]).unwrap();
        assert_eq!(c.max_writers, 10_000);
        assert_eq!(c.snapshot_every, 10_000);
        let c = config(&[
            ("MARQUEE_SNAPSHOT_EVERY", "0"),
            ("MARQUEE_MAX_WRITERS", "5"),
        ])
        .unwrap();
        assert_eq!((c.snapshot_every, c.max_writers), (0, 5));
        assert!(config(&[("MARQUEE_SNAPSHOT_EVERY", "often")]).is_err());
        let err = config(&[("MARQUEE_MAX_WRITERS", "0")]).unwrap_err();
        assert!(err
            .to_string()
            .contains("MARQUEE_MAX_WRITERS must be at least 1"));
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = config(&[("MARQUEE_JWT_SECRET", "too-short")]).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"));
        let ok = config(&[("MARQUEE_JWT_SECRET", &"x".repeat(32))]).unwrap();
        assert_eq!(ok.jwt_secret.unwrap().len(), 32);
    }

    #[test]
    fn request_time_limits_have_defaults_and_cannot_be_turned_off() {
        let c = config(&[]).unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.body_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert!(config(&[("MARQUEE_BODY_TIMEOUT_MS", "0")]).is_err());
        let short = config(&[("MARQUEE_REQUEST_TIMEOUT_MS", "30000")]).unwrap_err();
        assert!(short
            .to_string()
            .contains("longer than MARQUEE_PAYMENT_TIMEOUT_MS"));
    }

    #[test]
    fn half_an_admin_account_or_a_bad_number_is_an_error() {
        assert!(config(&[("MARQUEE_ADMIN_EMAIL", "a@b.co")]).is_err());
        assert!(config(&[("MARQUEE_HOLD_SECONDS", "soon")]).is_err());
        assert!(config(&[("MARQUEE_HOLD_SECONDS", "0")]).is_err());
        assert!(config(&[("MARQUEE_HOLD_COOLDOWN_SECONDS", "-1")]).is_err());
        let no_cooldown = config(&[("MARQUEE_HOLD_COOLDOWN_SECONDS", "0")]).unwrap();
        assert_eq!(no_cooldown.hold_cooldown, Duration::ZERO);
        assert!(config(&[("MARQUEE_HTTP_ADDR", "nowhere")]).is_err());
    }

    #[test]
    fn an_admin_password_registration_would_refuse_stops_the_start() {
        let admin = |password: &str| {
            config(&[
                ("MARQUEE_ADMIN_EMAIL", "admin@example.com"),
                ("MARQUEE_ADMIN_PASSWORD", password),
            ])
        };
        let err = admin("short").unwrap_err().to_string();
        assert_eq!(
            err,
            "MARQUEE_ADMIN_PASSWORD must be 8 to 1024 characters long"
        );
        assert!(admin(&"x".repeat(1025)).is_err());
        assert!(admin("change-me-please").unwrap().admin.is_some());
    }

    #[test]
    fn password_hashing_is_bounded_by_default_and_can_be_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.hash_limits, crate::passwords::HashLimits::default());
        let c = config(&[("MARQUEE_MAX_HASHES", "1"), ("MARQUEE_HASH_WAIT_MS", "0")]).unwrap();
        assert_eq!(c.hash_limits.at_once, 1);
        assert_eq!(c.hash_limits.wait, Duration::ZERO);
        assert!(config(&[("MARQUEE_MAX_HASHES", "0")]).is_err());
    }
}
