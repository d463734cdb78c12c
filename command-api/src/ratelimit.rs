//! Rate limits on the routes worth abusing: logging in (password guessing), registering
//! (account farms) and booking, that is holding seats and paying (hoarding seats so others
//! cannot buy them, testing stolen card numbers).
//!
//! Each of the three route classes has two keyed limiters (GCRA, from the `governor` crate):
//! one per client address and one per account. A request must pass both; otherwise it is
//! answered `429 rate-limited` with `Retry-After` before anything else runs, so it changes
//! nothing. The account is the email of a login or registration (hashed, so emails are not
//! kept in memory) and the token's user id for booking.
//!
//! The client address is the TCP peer, unless `Config::proxy_hops` says reverse proxies
//! stand in front: then it is the address the outermost trusted proxy saw, read from the
//! right of `X-Forwarded-For` (entries further left are whatever the client claimed).
//! IPv6 addresses are limited by their /64 prefix, since one host usually owns a whole /64.
//!
//! Memory: a key whose limiter has refilled is indistinguishable from an unseen one, so the
//! limiters drop such keys every minute (sooner when many are kept). A key therefore lives
//! at most one refill period after its last request, and the number kept is bounded by the
//! request rate the server can take.

use crate::auth::{bearer, TokenKeys};
use crate::deadlines::MAX_REQUEST_BODY;
use crate::error::ApiError;
use anyhow::{bail, Context};
use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `count` requests per `per`, in a burst or spread out: the bucket holds `count` and refills
/// one every `per / count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    const fn per_minute(count: u32) -> Self {
        Self {
            count,
            per: Duration::from_secs(60),
        }
    }

    const fn per_hour(count: u32) -> Self {
        Self {
            count,
            per: Duration::from_secs(3600),
        }
    }

    fn quota(self) -> Quota {
        let count = NonZeroU32::new(self.count).expect("parsing refuses a count of 0");
        Quota::with_period(self.per / self.count)
            .expect("parsing refuses a zero period")
            .allow_burst(count)
    }

    /// `N/s`, `N/m` or `N/h`.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (count, unit) = text
            .split_once('/')
            .with_context(|| format!("{text:?} is not a rate such as 10/m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .with_context(|| format!("{text:?}: the count must be a whole number above 0"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => bail!("{text:?}: the unit must be s, m or h, not {other:?}"),
        };
        Ok(Self { count, per })
    }
}

/// The limits of one route class: per client address and per account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub address: Rate,
    pub account: Rate,
}

/// Every limit. [`Default`] is what a public deployment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /v1/auth/token`.
    pub login: Rule,
    /// `POST /v1/users`.
    pub register: Rule,
    /// `POST /v1/reservations` and `POST /v1/tickets`, counted together.
    pub booking: Rule,
}

impl Default for RateLimits {
    /// Per account the limits are tight (a person does not log in five times a minute); per
    /// address they leave room for many people behind one NAT.
    fn default() -> Self {
        Self {
            login: Rule {
                address: Rate::per_minute(60),
                account: Rate::per_minute(5),
            },
            register: Rule {
                address: Rate::per_hour(60),
                account: Rate::per_hour(5),
            },
            booking: Rule {
                address: Rate::per_minute(300),
                account: Rate::per_minute(30),
            },
        }
    }
}

impl RateLimits {
    /// Reads `MARQUEE_RATE_LIMITS`: unset or `on` gives the defaults, `off` gives `None`, and
    /// a comma-separated list such as `login.account=3/m,booking.address=1000/m` changes
    /// some of the defaults.
    pub fn from_setting(value: Option<&str>) -> anyhow::Result<Option<Self>> {
        let mut limits = Self::default();
        match value.map(str::trim) {
            None | Some("on") => return Ok(Some(limits)),
            Some("off") => return Ok(None),
            Some(list) => {
                for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    limits.set(entry)?;
                }
            }
        }
        Ok(Some(limits))
    }

    fn set(&mut self, entry: &str) -> anyhow::Result<()> {
        let (name, rate) = entry
            .split_once('=')
            .with_context(|| format!("{entry:?} is not <route>.<scope>=<count>/<unit>"))?;
        let (route, scope) = name
            .trim()
            .split_once('.')
            .with_context(|| format!("{name:?}: name a route and a scope, e.g. login.account"))?;
        let rule = match route {
            "login" => &mut self.login,
            "register" => &mut self.register,
            "booking" => &mut self.booking,
            other => bail!("{other:?}: the routes are login, register and booking"),
        };
        let slot = match scope {
            "address" => &mut rule.address,
            "account" => &mut rule.account,
            other => bail!("{other:?}: the scopes are address and account"),
        };
        *slot = Rate::parse(rate)?;
        Ok(())
    }
}

/// The routes that are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Login,
    Register,
    Booking,
}

impl Class {
    /// Matched on the raw path: these are the contract's fixed paths, and a path that differs
    /// (a trailing slash, say) reaches no handler anyway.
    fn of(method: &Method, path: &str) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        match path {
            "/v1/auth/token" => Some(Self::Login),
            "/v1/users" => Some(Self::Register),
            "/v1/reservations" | "/v1/tickets" => Some(Self::Booking),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Booking => "booking",
        }
    }
}

/// Keys kept before an early sweep is worth its cost.
const CROWDED: usize = 10_000;
/// How often keys that have refilled are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The least time between two sweeps, however crowded.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// One keyed limiter that forgets idle keys.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    last_sweep: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(rate.quota()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Takes one request from `key`'s allowance, or says how long until there is one.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.sweep_if_due();
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    fn sweep_if_due(&self) {
        // `try_lock`: when another request is sweeping (or checking), this one need not.
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        let since = last.elapsed();
        let due =
            since >= SWEEP_EVERY || (since >= SWEEP_AT_MOST_EVERY && self.limiter.len() > CROWDED);
        if due {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            *last = Instant::now();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// The two limiters of one route class.
struct Pair {
    address: Keyed<IpAddr>,
    account: Keyed<u128>,
}

impl Pair {
    fn new(rule: Rule) -> Self {
        Self {
            address: Keyed::new(rule.address),
            account: Keyed::new(rule.account),
        }
    }
}

/// The rate limiters of one API process, shared by its requests.
pub struct Limiters {
    login: Pair,
    register: Pair,
    booking: Pair,
    proxy_hops: usize,
    keys: Arc<TokenKeys>,
}

impl Limiters {
    /// `keys` verify booking tokens, to limit per user.
    pub fn new(limits: &RateLimits, proxy_hops: usize, keys: Arc<TokenKeys>) -> Self {
        Self {
            login: Pair::new(limits.login),
            register: Pair::new(limits.register),
            booking: Pair::new(limits.booking),
            proxy_hops,
            keys,
        }
    }

    fn pair(&self, class: Class) -> &Pair {
        match class {
            Class::Login => &self.login,
            Class::Register => &self.register,
            Class::Booking => &self.booking,
        }
    }

    /// Lets the request through, or refuses it with `RateLimited`.
    async fn admit(&self, class: Class, request: Request) -> Result<Request, ApiError> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let address = client_address(peer, request.headers(), self.proxy_hops);
        let (request, account) = self.account(class, request).await?;
        let pair = self.pair(class);
        let by_address = pair.address.check(&address).err();
        let by_account = account.and_then(|a| pair.account.check(&a).err());
        let (scope, wait) = match (by_address, by_account) {
            (None, None) => return Ok(request),
            (Some(a), Some(b)) if b > a => ("account", b),
            (Some(a), _) => ("address", a),
            (None, Some(b)) => ("account", b),
        };
        // Never the address or the account itself: logs hold no personal data.
        tracing::info!(route = class.name(), scope, "rate limited");
        metrics::counter!("marquee_rate_limited_total", "route" => class.name(), "scope" => scope)
            .increment(1);
        Err(ApiError::RateLimited(whole_seconds(wait)))
    }

    /// The account a request acts for, if it names one. A body or token the handler would
    /// refuse anyway names none; the address limit still counts the request.
    async fn account(
        &self,
        class: Class,
        request: Request,
    ) -> Result<(Request, Option<u128>), ApiError> {
        if class == Class::Booking {
            let (parts, body) = request.into_parts();
            let user = bearer(&parts)
                .and_then(|token| self.keys.verify(token).ok())
                .map(|user| user.id.0.as_u128());
            return Ok((Request::from_parts(parts, body), user));
        }
        // The email is in the body: read it (no more than the handler would), then hand the
        // same bytes on.
        let (parts, body) = request.into_parts();
        let bytes = to_bytes(body, MAX_REQUEST_BODY)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        let email = serde_json::from_slice::<EmailOnly>(&bytes)
            .ok()
            .map(|b| email_key(&b.email));
        Ok((Request::from_parts(parts, Body::from(bytes)), email))
    }
}

#[derive(serde::Deserialize)]
struct EmailOnly {
    email: String,
}

/// Emails are compared case-insensitively; the key is a hash so the limiter keeps no emails.
fn email_key(email: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The client's address: the peer's, or with `hops` trusted proxies in front, the entry
/// `hops` from the right of `X-Forwarded-For` (each proxy appends the address it saw). A
/// header too short to have passed all of them falls back to the peer.
fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, hops: usize) -> IpAddr {
    let forwarded = (hops > 0)
        .then(|| {
            let entries: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;
            entry
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .flatten();
    // Requests that did not come through a socket (in-process tests) share one bucket.
    bucket(forwarded.or(peer).unwrap_or(IpAddr::from([0, 0, 0, 0])))
}

/// IPv4 as is; IPv6 by its /64 prefix (an IPv4-mapped one as the IPv4 address).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// `Retry-After` is in whole seconds: round up, and never say 0 (that invites a retry now).
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The middleware: limits the limited routes, passes everything else through untouched.
/// (With rate limits off it is not in the stack at all.)
pub async fn enforce(
    State(limiters): State<Arc<Limiters>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(class) = Class::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    match limiters.admit(class, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        assert_eq!(Rate::parse("10/m").unwrap(), Rate::per_minute(10));
        assert_eq!(Rate::parse("2/h").unwrap(), Rate::per_hour(2));
        for bad in ["0/m", "ten/m", "10/d", "10", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        let limits = RateLimits::from_setting(Some("login.address=7/s, booking.account=1/h"))
            .unwrap()
            .unwrap();
        assert_eq!(limits.login.address.count, 7);
        assert_eq!(limits.booking.account, Rate::per_hour(1));
        assert_eq!(limits.register, RateLimits::default().register);
        assert!(RateLimits::from_setting(Some("logout.account=1/s")).is_err());
        assert!(RateLimits::from_setting(Some("login.everyone=1/s")).is_err());
        assert_eq!(RateLimits::from_setting(Some("off")).unwrap(), None);
    }

    #[test]
    fn only_the_abusable_routes_are_limited() {
        assert_eq!(
            Class::of(&Method::POST, "/v1/auth/token"),
            Some(Class::Login)
        );
        assert_eq!(Class::of(&Method::POST, "/v1/users"), Some(Class::Register));
        assert_eq!(
            Class::of(&Method::POST, "/v1/tickets"),
            Some(Class::Booking)
        );
        assert_eq!(Class::of(&Method::GET, "/v1/tickets"), None);
        assert_eq!(Class::of(&Method::POST, "/v1/movies"), None);
    }

    #[test]
    fn a_limiter_refuses_past_its_burst_and_says_how_long_to_wait() {
        let keyed = Keyed::new(Rate::per_minute(2));
        assert!(keyed.check(&1u8).is_ok());
        assert!(keyed.check(&1u8).is_ok());
        let wait = keyed.check(&1u8).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(whole_seconds(wait), 30);
        assert!(
            keyed.check(&2u8).is_ok(),
            "another key has its own allowance"
        );
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn keys_that_have_refilled_are_forgotten() {
        let keyed = Keyed::new(Rate {
            count: 1,
            per: Duration::from_millis(20),
        });
        for key in 0..100u32 {
            keyed.check(&key).unwrap();
        }
        assert_eq!(keyed.len(), 100);
        std::thread::sleep(Duration::from_millis(40));
        *keyed.last_sweep.lock().unwrap() -= SWEEP_EVERY;
        keyed.check(&1000).unwrap();
        assert!(
            keyed.len() <= 1,
            "idle keys are dropped, {} left",
            keyed.len()
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let peer_ip = IpAddr::from([10, 0, 0, 1]);
        let peer = Some(peer_ip);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        assert_eq!(client_address(peer, &headers, 0), peer_ip);
        assert_eq!(
            client_address(peer, &headers, 1),
            IpAddr::from([203, 0, 113, 7])
        );
        assert_eq!(
            client_address(peer, &headers, 2),
            IpAddr::from([6, 6, 6, 6])
        );
        assert_eq!(client_address(peer, &headers, 3), peer_ip);
        assert_eq!(
            client_address(None, &HeaderMap::new(), 1),
            IpAddr::from([0, 0, 0, 0])
        );
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(bucket(mapped), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn emails_are_keyed_case_insensitively() {
        assert_eq!(email_key(" Ann@Example.com"), email_key("ann@example.com"));
        assert_ne!(email_key("ann@example.com"), email_key("bob@example.com"));
    }
}
