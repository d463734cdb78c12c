//! Operator and analyst commands of the `marquee` binary: exporting the event history and
//! replaying read models. Progress bars go to stderr (only when it is a terminal); the binary
//! prints the summaries there too, so they never mix with exported data on stdout.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use marquee_event_store::envelope::Envelope;
use marquee_event_store::history::{self, Filter};
use sqlx::PgPool;
use std::io::Write;

/// How to write exported events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated, one row per event, payload and metadata as JSON text.
    Csv,
}

/// Events fetched per round trip while exporting.
const EXPORT_PAGE: i64 = 5_000;

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} events ({{per_sec}}, eta {{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// What an export wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub events: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// Streams the events matching `filter` after position `after` to `out`, a page at a time
/// (constant memory), in commit order.
pub async fn export(
    pool: &PgPool,
    filter: &Filter,
    after: i64,
    format: Format,
    out: &mut dyn Write,
    show_progress: bool,
) -> anyhow::Result<ExportSummary> {
    let total = history::count(pool, filter, after).await?;
    let progress = if show_progress {
        bar(total as u64, "exporting")
    } else {
        ProgressBar::hidden()
    };
    if format == Format::Csv {
        out.write_all(
            b"position,recorded_at,aggregate_type,aggregate_id,sequence,event_type,event_version,payload,metadata\n",
        )?;
    }
    let mut summary = ExportSummary::default();
    let mut cursor = after;
    loop {
        let page = history::page(pool, filter, cursor, EXPORT_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = last.position;
        summary.first.get_or_insert(page[0].position);
        summary.last = Some(last.position);
        match format {
            Format::Csv => write_csv(out, &page)?,
            Format::Ndjson => {
                for event in &page {
                    write_ndjson(out, event)?;
                }
            }
        }
        summary.events += page.len() as u64;
        progress.set_position(summary.events);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(summary)
}

fn write_ndjson(out: &mut dyn Write, e: &Envelope) -> anyhow::Result<()> {
    let line = serde_json::json!({
        "position": e.position,
        "recorded_at": e.recorded_at,
        "aggregate_type": e.aggregate_type,
        "aggregate_id": e.aggregate_id,
        "sequence": e.sequence,
        "event_type": e.event_type,
        "event_version": e.event_version,
        "payload": history::fields(e),
        "metadata": e.metadata,
    });
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes one page as CSV rows (quoted as needed), through a buffer of one page only.
fn write_csv(out: &mut dyn Write, page: &[Envelope]) -> anyhow::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for e in page {
        w.write_record([
            e.position.to_string(),
            e.recorded_at.to_rfc3339(),
            e.aggregate_type.clone(),
            e.aggregate_id.clone(),
            e.sequence.to_string(),
            e.event_type.clone(),
            e.event_version.clone(),
            history::fields(e).to_string(),
            e.metadata.to_string(),
        ])?;
    }
    out.write_all(&w.into_inner()?)?;
    Ok(())
}

/// Replays the named projections (all when `names` is empty) and reports what it did.
pub async fn replay(
    pool: &PgPool,
    names: &[String],
    show_progress: bool,
) -> anyhow::Result<marquee_projections::rebuild::Report> {
    let all = marquee_projections::all();
    let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        bail!("no projection {bad:?}; there are: {}", known.join(", "));
    }
    let chosen: Vec<&dyn marquee_projections::Projection> = all
        .iter()
        .filter(|p| names.is_empty() || names.iter().any(|n| n == p.name()))
        .map(|p| p.as_ref())
        .collect();
    let total = marquee_projections::rebuild::events_to_replay(pool, &chosen).await?;
    let progress = if show_progress {
        bar(total as u64, "replaying")
    } else {
        ProgressBar::hidden()
    };
    let report = marquee_projections::rebuild::replay(pool, &chosen, &|n| progress.set_position(n))
        .await
        .context("replay failed; the live read models are unchanged")?;
    progress.finish_and_clear();
    Ok(report)
}

/// Runs the invariant checker ([`crate::check`]) with a progress bar on a terminal.
pub async fn check(
    pool: &PgPool,
    wait_for_projections: Option<std::time::Duration>,
    show_progress: bool,
) -> anyhow::Result<crate::check::Findings> {
    let progress = if show_progress {
        bar(0, "checking")
    } else {
        ProgressBar::hidden()
    };
    let findings = crate::check::check(pool, wait_for_projections, &|done, total| {
        progress.set_length(total);
        progress.set_position(done);
    })
    .await?;
    progress.finish_and_clear();
    Ok(findings)
}
