//! One closed-loop run's outcome in the hot-showtime benchmark, and its row in the printed
//! table; the chart draws these too.

use crate::load::{Choice, Tally};
use crate::target::Design;

/// One closed-loop run's outcome.
pub struct Outcome {
    pub showtimes: usize,
    pub design: Design,
    pub clients: usize,
    pub choice: Choice,
    pub seconds: f64,
    pub tally: Tally,
    pub violations: usize,
    /// fdatasync/s before and after the pair of runs this one belongs to.
    pub fsync: (Option<f64>, Option<f64>),
}

impl Outcome {
    pub fn holds_per_second(&self) -> f64 {
        self.tally.holds as f64 / self.seconds
    }

    pub fn attempts_per_second(&self) -> f64 {
        self.tally.attempts as f64 / self.seconds
    }

    pub fn row(&self) -> String {
        let t = &self.tally;
        format!(
            "| {} | {:?} | {} | {:?} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            self.showtimes,
            self.design,
            self.clients,
            self.choice,
            self.holds_per_second(),
            self.attempts_per_second(),
            t.taken,
            t.shed,
            t.errors,
            t.ms(0.5),
            t.ms(0.99),
            t.ms(0.999),
            self.violations,
            rate(self.fsync.0),
            rate(self.fsync.1),
        )
    }
}

pub const HEADER: &str = "| showtimes | design | clients | seats | holds/s | attempts/s | seat taken (409) | shed (503) | errors | p50 ms | p99 ms | p99.9 ms | double bookings | fsync/s before | fsync/s after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.0}"))
}
