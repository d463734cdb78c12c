//! The engine's own view of an open-loop run's hold latency: its
//! `marquee_http_request_duration_seconds` histogram for `POST /v1/reservations`, and how long
//! commands waited in their showtime's queue (`marquee_writer_queue_wait_seconds`), read from
//! the process's metrics recorder before and after the run, and how long its batches took to
//! append (`marquee_writer_append_seconds`).
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
const APPENDS: (&str, &[&str]) = ("marquee_writer_append_seconds_bucket{", &[]);

/// Cumulative counts per bucket bound (seconds), in the recorder's order.
pub struct Buckets(Vec<(f64, u64)>);

/// The engine's histograms at one moment.
pub struct Reading {
    /// Hold requests, from admission to answer.
    pub holds: Buckets,
    /// Commands waiting in their showtime's queue.
    pub waits: Buckets,
    /// Batches being appended (both ways together).
    pub appends: Buckets,
}

/// The histograms as they stand now. All targets of this process share the recorder, so
/// only the difference of two readings speaks of one run.
pub fn now() -> Reading {
    let text = marquee_api::metrics::recorder().render();
    Reading {
        holds: Buckets::parse(&text, HOLDS),
        waits: Buckets::parse(&text, WRITER_WAIT),
        appends: Buckets::parse(&text, APPENDS),
    }
}

impl Reading {
    /// What was counted after `before`.
    pub fn since(&self, before: &Reading) -> Reading {
        Reading {
            holds: self.holds.since(&before.holds),
            waits: self.waits.since(&before.waits),
            appends: self.appends.since(&before.appends),
        }
    }
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
            .fold(Vec::<(f64, u64)>::new(), |mut merged, (bound, count)| {
                // Series of other label values (an append's way) add up bucket by bucket.
                match merged.iter_mut().find(|(b, _)| *b == bound) {
                    Some(same) => same.1 += count,
                    None => merged.push((bound, count)),
                }
                merged
            });
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

    #[test]
    fn the_series_of_every_way_add_up() {
        let appends = Buckets::parse(
            r#"marquee_writer_append_seconds_bucket{way="statement",le="0.01"} 98
marquee_writer_append_seconds_bucket{way="statement",le="0.1"} 98
marquee_writer_append_seconds_bucket{way="statement",le="+Inf"} 98
marquee_writer_append_seconds_bucket{way="transaction",le="0.01"} 0
marquee_writer_append_seconds_bucket{way="transaction",le="0.1"} 2
marquee_writer_append_seconds_bucket{way="transaction",le="+Inf"} 2"#,
            APPENDS,
        );
        assert_eq!(appends.bound_ms(0.98), "≤ 10");
        assert_eq!(appends.bound_ms(0.99), "≤ 100");
    }
}
