//! The engine's own view of an open-loop run's hold latency: its
//! `marquee_http_request_duration_seconds` histogram for `POST /v1/reservations`, and how long
//! commands waited in their showtime's queue (`marquee_writer_queue_wait_seconds`), read from
//! the process's metrics recorder before and after the run.
//!
//! It counts from the moment a request is admitted until its answer is ready, so it leaves out
//! what the load generator's own latencies also hold: the generator starting late, the request
//! waiting in socket buffers and in the runtime before the engine reads it, and the answer's
//! way back. The difference between the two says where the time went. Its buckets are coarse
//! (1, 2.5, 5, 10, 25, 50, 100, 250 ms, ...), so a quantile is known only as a bucket's bound.

const HOLDS: (&str, &[&str]) = (
    "marquee_http_request_duration_seconds_bucket{",
    &[r#"method="POST""#, r#"route="/v1/reservations""#],
);
const WRITER_WAIT: (&str, &[&str]) = ("marquee_writer_queue_wait_seconds_bucket{", &[]);

/// Cumulative counts per bucket bound (seconds), in the recorder's order.
pub struct Buckets(Vec<(f64, u64)>);

/// Both histograms as they stand now (all targets of this process share the recorder, so
/// only the difference of two readings speaks of one run): holds, then writer waits.
pub fn now() -> (Buckets, Buckets) {
    let text = marquee_api::metrics::recorder().render();
    (
        Buckets::parse(&text, HOLDS),
        Buckets::parse(&text, WRITER_WAIT),
    )
}

impl Buckets {
    fn parse(text: &str, (metric, labels): (&str, &[&str])) -> Self {
        let buckets = text
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| {
                let (_, rest) = l.split_once(r#"le=""#)?;
                let (bound, rest) = rest.split_once('"')?;
                let count = rest.trim_start_matches('}').trim().parse().ok()?;
                let bound = match bound {
                    "+Inf" => f64::INFINITY,
                    b => b.parse().ok()?,
                };
                Some((bound, count))
            })
            .collect();
        Self(buckets)
    }

    /// What was counted after `before`.
    pub fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(bound, n)| {
                    let earlier = before
                        .0
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |b| b.1);
                    (bound, n.saturating_sub(earlier))
                })
                .collect(),
        )
    }

    /// The bound (ms) of the first bucket holding the `quantile`, as text: "≤ 50", or "-"
    /// when nothing was counted.
    pub fn bound_ms(&self, quantile: f64) -> String {
        let total = self.0.last().map_or(0, |b| b.1);
        if total == 0 {
            return "-".into();
        }
        let wanted = (quantile * total as f64).ceil() as u64;
        match self.0.iter().find(|(_, n)| *n >= wanted) {
            Some((bound, _)) if bound.is_finite() => format!("≤ {}", bound * 1000.0),
            _ => "> largest bucket".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_bound_of_the_first_bucket_that_holds_it() {
        let before = Buckets::parse(
            r#"marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.01"} 5
marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.05"} 5
marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="+Inf"} 5"#,
            HOLDS,
        );
        let after = Buckets::parse(
            r#"marquee_http_request_duration_seconds_bucket{method="GET",route="/v1/reservations",le="0.01"} 900
marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.01"} 95
marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="0.05"} 104
marquee_http_request_duration_seconds_bucket{method="POST",route="/v1/reservations",le="+Inf"} 105
marquee_writer_queue_wait_seconds_bucket{le="0.01"} 7"#,
            HOLDS,
        );
        let run = after.since(&before);
        assert_eq!(run.bound_ms(0.5), "≤ 10");
        assert_eq!(run.bound_ms(0.99), "≤ 50");
        assert_eq!(run.bound_ms(1.0), "> largest bucket");
        assert_eq!(Buckets(vec![]).bound_ms(0.99), "-");
    }
}
