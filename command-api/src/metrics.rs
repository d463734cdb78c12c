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

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
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

/// `GET /metrics`: Prometheus text format.
pub async fn render() -> Response {
    let body = recorder().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Counts requests and their durations by route template (never by raw path: ids would make
/// a new series per request).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("marquee_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("marquee_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
