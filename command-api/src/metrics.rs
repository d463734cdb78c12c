//! Prometheus metrics: the recorder, `/metrics`, and per-request counters.
//!
//! Metric names:
//! - `marquee_http_requests_total{method,route,status}`, `marquee_http_request_duration_seconds{method,route}`
//! - `marquee_writer_batch_size`, `marquee_writer_commands_total{outcome}`,
//!   `marquee_group_commit_batches_size` (showtime batches written in one commit),
//!   `marquee_writer_queue_wait_seconds` (from a command's queueing to its writer taking it),
//!   `marquee_writer_append_seconds{way}` (a batch's append: `statement` or `transaction`)
//! - `marquee_relay_published_total`, `marquee_relay_backlog`, `marquee_relay_leader`
//! - `marquee_consumer_backlog{consumer}`, `marquee_consumer_parked_total{consumer}`
//! - `marquee_projection_lag_seconds{projection}` (commit to read-model update),
//!   `marquee_projection_applied_total{projection}`
//! - `marquee_password_hashes_in_progress` (see `crate::passwords`)
//! - `marquee_readiness_checks_total` (see `crate::readiness`)

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Instant;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes))
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// `GET /metrics`: Prometheus text format. Served on the API's address, or only on
/// `MARQUEE_METRICS_ADDR` when that is set (see `app::metrics_router`).
pub async fn render() -> Response {
    let body = recorder().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Counts requests and their durations by route template (never by raw path: ids would make
/// a new series per request), and logs the cause of every internal error once, where it is
/// answered (see [`crate::error::log_internal_error`]).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    // The path only for the log of a failure: cloning a `Uri` shares its bytes.
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    RequestSeries::of(&method, route, response.status().as_u16())
        .record(started.elapsed().as_secs_f64());
    crate::error::log_internal_error(&method, uri.path(), &response);
    response
}

/// The two series a request is counted in.
#[derive(Clone)]
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
}

/// The series of every route, method and status seen so far, by route. Asking the recorder for
/// a series builds its key (a string per label) and looks it up in a map shared by every
/// metric; in a trial on a hot showtime without this middleware, the engine answered about a
/// tenth more requests. Here a request costs one read lock and a lookup by route; the recorder
/// is asked once per series.
static SERIES: LazyLock<RwLock<HashMap<Box<str>, Vec<Seen>>>> = LazyLock::new(|| {
    // Handles taken before the recorder is installed would count nowhere, forever.
    recorder();
    RwLock::default()
});

/// The series of one route for a method and status.
type Seen = ((&'static str, u16), RequestSeries);

impl RequestSeries {
    fn of(method: &Method, route: &str, status: u16) -> Self {
        // Methods outside the standard ones are one series, so a client cannot make new ones.
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        };
        let find = |seen: &[Seen]| {
            seen.iter()
                .find(|(key, _)| *key == (method, status))
                .map(|(_, series)| series.clone())
        };
        if let Some(series) = SERIES
            .read()
            .expect("lock poisoned")
            .get(route)
            .and_then(|seen| find(seen))
        {
            return series;
        }
        let mut all = SERIES.write().expect("lock poisoned");
        let seen = all.entry(route.into()).or_default();
        if let Some(series) = find(seen) {
            return series;
        }
        let series = Self {
            requests: metrics::counter!("marquee_http_requests_total",
                "method" => method, "route" => route.to_owned(), "status" => status.to_string()),
            duration: metrics::histogram!("marquee_http_request_duration_seconds",
                "method" => method, "route" => route.to_owned()),
        };
        seen.push(((method, status), series.clone()));
        series
    }

    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}
