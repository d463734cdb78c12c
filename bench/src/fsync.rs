//! How fast the disk PostgreSQL writes to can fsync right now, read with `pg_test_fsync`.
//!
//! Every committed hold waits for one fsync (the engine's batch of them, N2's transaction,
//! R's append-only file), and this machine's disk varies twentyfold within an hour; the
//! reading before and after each pair of runs says how far the comparison can be trusted.
//! Only the first `fdatasync` figure (one 8 kB write, PostgreSQL's `wal_sync_method` on
//! Linux) is needed, so the tool is stopped as soon as it has printed it.

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PG_TEST_FSYNC: &str = "/usr/lib/postgresql/15/bin/pg_test_fsync";
/// A file on the filesystem of PostgreSQL's data directory.
const TEST_FILE: &str = "/var/lib/postgresql/marquee-bench-fsync.tmp";

/// fdatasync calls per second of one 8 kB write, over `seconds` seconds.
pub async fn fdatasync_per_second(seconds: u32) -> anyhow::Result<f64> {
    let mut child = Command::new(PG_TEST_FSYNC)
        .args(["-s", &seconds.to_string(), "-f", TEST_FILE])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {PG_TEST_FSYNC}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut rate = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(r) = parse_fdatasync(&line) {
            rate = Some(r);
            break;
        }
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_file(TEST_FILE);
    rate.context("pg_test_fsync printed no fdatasync figure")
}

/// The ops/sec of a line such as `        fdatasync    6181.617 ops/sec     162 usecs/op`.
fn parse_fdatasync(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    if words.next()? != "fdatasync" {
        return None;
    }
    let rate = words.next()?.parse().ok()?;
    (words.next()? == "ops/sec").then_some(rate)
}

#[cfg(test)]
mod tests {
    use super::parse_fdatasync;

    #[test]
    fn the_fdatasync_line_is_read_and_others_are_not() {
        let line = "        fdatasync                          6181.617 ops/sec     162 usecs/op";
        assert_eq!(parse_fdatasync(line), Some(6181.617));
        let other = "        open_datasync                      4028.738 ops/sec     248 usecs/op";
        assert_eq!(parse_fdatasync(other), None);
        assert_eq!(parse_fdatasync("        fdatasync        n/a"), None);
    }
}
