//! The invariant checker (`marquee check`): replays the whole event log and proves the
//! promises Marquee makes, or names each place it broke one.
//!
//! - No seat was ever in two live holds, or sold twice (the domain's independent
//!   [`Auditor`], per showtime, at every event).
//! - Every ticket was paid exactly once: issued once, by one payment that was started and
//!   settled once, whose amount is the price of its tickets.
//! - Every successful charge produced tickets or was refunded: every charge the card
//!   processor made is in the log as tickets or a refund (or still being reconciled).
//! - Every refund matches a payment: a payment refunded whole for its amount, a ticket
//!   refunded once for its price; every refund the processor paid is one the log records.
//! - The read models equal a fresh rebuild from the log.
//!
//! The processor's side is read from the built-in test processor's records; payments it has
//! no record of (a generated history, or another processor) are counted, not judged.

use anyhow::Context;
use futures::TryStreamExt;
use marquee_domain::audit::Auditor;
use marquee_domain::showtime::{PaymentStarted, ShowtimeEvent, TicketRefunded, TicketsIssued};
use marquee_domain::{Money, PaymentId, TicketId};
use marquee_event_store::envelope::Envelope;
use marquee_event_store::envelope::COLUMNS;
use marquee_projections::projection::decode;
use marquee_projections::rebuild::{bulk_rebuild_into, differences};
use marquee_projections::Projection;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What a check found.
#[derive(Debug, Default)]
pub struct Findings {
    pub events: u64,
    pub showtimes: u64,
    pub payments: u64,
    pub tickets: u64,
    /// Payments whose outcome is still being reconciled with the processor.
    pub payments_in_flight: i64,
    /// Refunds recorded in the log that the processor has not confirmed yet.
    pub refunds_due: i64,
    /// Payments the processor has no record of (not judged against it).
    pub unknown_to_processor: u64,
    /// Whether the read models were compared with a rebuild.
    pub read_models_checked: bool,
    /// Every broken promise, described.
    pub violations: Vec<String>,
    pub seconds: f64,
}

/// One payment as the log tells it.
#[derive(Default)]
struct PaymentLog {
    amount: Option<Money>,
    ticketed: Option<Money>,
    refunded_whole: Option<Money>,
}

/// Folds the whole log once.
#[derive(Default)]
struct Ledger {
    payments: HashMap<PaymentId, PaymentLog>,
    /// Ticket → (its payment, its price).
    tickets: HashMap<TicketId, (PaymentId, Money)>,
    /// Refund ids as the processor knows them (see `booking_index`), with their amounts.
    refunds: HashMap<String, Money>,
    violations: Vec<String>,
}

impl Ledger {
    fn observe(&mut self, showtime: &str, event: &ShowtimeEvent) {
        match event {
            ShowtimeEvent::PaymentStarted(e) => self.payment_started(e),
            ShowtimeEvent::TicketsIssued(e) => self.tickets_issued(showtime, e),
            ShowtimeEvent::PaymentRefunded {
                payment_id, amount, ..
            } => self.payment_refunded(showtime, *payment_id, amount),
            ShowtimeEvent::TicketRefunded(e) => self.ticket_refunded(showtime, e),
            _ => {}
        }
    }

    /// Notes what the payment charges.
    fn payment_started(&mut self, e: &PaymentStarted) {
        self.payments.entry(e.payment_id).or_default().amount = Some(e.amount.clone());
    }

    /// Notes each ticket once, and that the payment charged what its tickets are worth.
    fn tickets_issued(&mut self, showtime: &str, e: &TicketsIssued) {
        let mut total: Option<Money> = None;
        for t in &e.tickets {
            if self
                .tickets
                .insert(t.ticket_id, (e.payment_id, t.price.clone()))
                .is_some()
            {
                self.violations.push(format!(
                    "showtime {showtime}: ticket {} issued twice",
                    t.ticket_id
                ));
            }
            total = Some(match total {
                None => t.price.clone(),
                Some(sum) => sum.checked_add(&t.price).unwrap_or(sum),
            });
        }
        let payment = self.payments.entry(e.payment_id).or_default();
        payment.ticketed = total;
        if payment.amount.is_some() && payment.ticketed != payment.amount {
            self.violations.push(format!(
                "showtime {showtime}: payment {} charged {:?} for tickets worth {:?}",
                e.payment_id, payment.amount, payment.ticketed
            ));
        }
    }

    /// Notes a whole payment's refund, which must be for what it charged.
    fn payment_refunded(&mut self, showtime: &str, payment_id: PaymentId, amount: &Money) {
        let payment = self.payments.entry(payment_id).or_default();
        if payment.amount.as_ref() != Some(amount) {
            self.violations.push(format!(
                "showtime {showtime}: payment {payment_id} of {:?} refunded {amount:?}",
                payment.amount
            ));
        }
        payment.refunded_whole = Some(amount.clone());
        self.refunds.insert(payment_id.to_string(), amount.clone());
    }

    /// Notes a ticket's refund, which must be of a ticket sold by that payment at that price.
    fn ticket_refunded(&mut self, showtime: &str, e: &TicketRefunded) {
        match self.tickets.get(&e.ticket_id) {
            Some((payment, price)) if *payment == e.payment_id && *price == e.amount => {}
            found => self.violations.push(format!(
                "showtime {showtime}: refund of ticket {} (payment {}, {:?}) matches no \
                 ticket sold (found {found:?})",
                e.ticket_id, e.payment_id, e.amount
            )),
        }
        self.refunds.insert(
            format!("{}/{}", e.payment_id, e.ticket_id),
            e.amount.clone(),
        );
    }
}

/// Checks the whole log. `wait_for_projections` is how long to wait for the live read models
/// to catch up before comparing them with a rebuild; `None` skips that comparison.
pub async fn check(
    pool: &PgPool,
    wait_for_projections: Option<Duration>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let total: i64 =
        sqlx::query_scalar("select count(*) from events where aggregate_type = 'Showtime'")
            .fetch_one(pool)
            .await?;
    let mut findings = Findings::default();
    let mut ledger = Ledger::default();
    let sql = format!(
        "select {COLUMNS} from events where aggregate_type = 'Showtime'
         order by aggregate_id, sequence"
    );
    let mut rows = sqlx::query_as::<_, Envelope>(&sql).fetch(pool);
    let mut current: Option<(String, Auditor)> = None;
    while let Some(row) = rows.try_next().await? {
        let event: ShowtimeEvent =
            decode(&row).with_context(|| format!("event at position {}", row.position))?;
        if current
            .as_ref()
            .is_none_or(|(id, _)| *id != row.aggregate_id)
        {
            finish_showtime(current.take(), &mut findings);
            current = Some((row.aggregate_id.clone(), Auditor::default()));
        }
        let (_, auditor) = current.as_mut().expect("set above");
        auditor.observe(&event);
        ledger.observe(&row.aggregate_id, &event);
        findings.events += 1;
        if findings.events % 10_000 == 0 {
            progress(findings.events, total as u64);
        }
    }
    finish_showtime(current.take(), &mut findings);
    progress(findings.events, total as u64);
    findings.payments = ledger.payments.len() as u64;
    findings.tickets = ledger.tickets.len() as u64;
    findings.violations.append(&mut ledger.violations);
    check_processor(pool, &ledger, &mut findings).await?;
    if let Some(wait) = wait_for_projections {
        check_read_models(pool, wait, &mut findings).await?;
    }
    findings.seconds = started.elapsed().as_secs_f64();
    Ok(findings)
}

fn finish_showtime(done: Option<(String, Auditor)>, findings: &mut Findings) {
    if let Some((id, auditor)) = done {
        findings.showtimes += 1;
        findings.violations.extend(
            auditor
                .violations
                .into_iter()
                .map(|v| format!("showtime {id}: {v}")),
        );
    }
}

/// The log against the processor's records.
async fn check_processor(
    pool: &PgPool,
    ledger: &Ledger,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let in_flight: HashSet<uuid::Uuid> =
        sqlx::query_scalar::<_, uuid::Uuid>("select payment_id from payments_in_flight")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    findings.payments_in_flight = in_flight.len() as i64;
    findings.refunds_due = sqlx::query_scalar("select count(*) from refunds_due")
        .fetch_one(pool)
        .await?;
    let charges = charges(pool).await?;
    check_charges(ledger, &charges, &in_flight, findings);
    check_settled(ledger, &charges, findings);
    check_refunds(pool, ledger, findings).await
}

/// The processor's charges by payment: amount and outcome.
async fn charges(pool: &PgPool) -> Result<HashMap<uuid::Uuid, (i64, String)>, sqlx::Error> {
    Ok(sqlx::query_as::<_, (uuid::Uuid, i64, String)>(
        "select payment_id, amount, outcome from test_processor_charges",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, amount, outcome)| (id, (amount, outcome)))
    .collect())
}

/// Every charge the processor made is in the log as tickets or a refund, unless it is
/// still being reconciled.
fn check_charges(
    ledger: &Ledger,
    charges: &HashMap<uuid::Uuid, (i64, String)>,
    in_flight: &HashSet<uuid::Uuid>,
    findings: &mut Findings,
) {
    for (id, (amount, outcome)) in charges {
        if outcome != "charged" {
            continue;
        }
        let logged = ledger.payments.get(&PaymentId(*id));
        let settled_with_money =
            logged.is_some_and(|p| p.ticketed.is_some() || p.refunded_whole.is_some());
        if !settled_with_money && !in_flight.contains(id) {
            findings.violations.push(format!(
                "payment {id}: the processor charged {amount} but the log has neither tickets \
                 nor a refund for it"
            ));
        }
    }
}

/// Every payment the log settled with tickets or a refund was charged by the processor
/// (those it has no record of are counted).
fn check_settled(
    ledger: &Ledger,
    charges: &HashMap<uuid::Uuid, (i64, String)>,
    findings: &mut Findings,
) {
    for (id, payment) in &ledger.payments {
        if payment.ticketed.is_none() && payment.refunded_whole.is_none() {
            continue;
        }
        match charges.get(&id.0) {
            None => findings.unknown_to_processor += 1,
            Some((_, outcome)) if outcome != "charged" => findings.violations.push(format!(
                "payment {id}: the log has tickets or a refund, the processor declined it \
                 ({outcome})"
            )),
            Some(_) => {}
        }
    }
}

/// Every refund the processor paid is one the log records, for the same amount.
async fn check_refunds(
    pool: &PgPool,
    ledger: &Ledger,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let paid: Vec<(String, i64)> =
        sqlx::query_as("select refund_id, amount from test_processor_refunds")
            .fetch_all(pool)
            .await?;
    for (refund, amount) in paid {
        match ledger.refunds.get(&refund) {
            Some(m) if m.amount == amount => {}
            other => findings.violations.push(format!(
                "refund {refund}: the processor paid {amount}, the log records {other:?}"
            )),
        }
    }
    Ok(())
}

/// The live read models against a fresh rebuild, once they have caught up with the log.
async fn check_read_models(
    pool: &PgPool,
    wait: Duration,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut behind = marquee_projections::tracking::unapplied(pool).await?;
    while behind > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        behind = marquee_projections::tracking::unapplied(pool).await?;
    }
    if behind > 0 {
        findings.violations.push(format!(
            "read models: {behind} aggregates not caught up after {} s (is a projector running?)",
            wait.as_secs()
        ));
        return Ok(());
    }
    let projections = marquee_projections::all();
    let all: Vec<&dyn Projection> = projections.iter().map(|p| p.as_ref()).collect();
    let schema_of = |name: &str| format!("check_{name}");
    bulk_rebuild_into(pool, &all, &schema_of, &|_| {}).await?;
    for p in &all {
        for table in p.tables() {
            let diff = differences(pool, table, "public", &schema_of(p.name())).await?;
            if diff > 0 {
                findings.violations.push(format!(
                    "read model {table}: {diff} rows differ from a rebuild from the log"
                ));
            }
        }
        sqlx::query(&format!("drop schema {} cascade", schema_of(p.name())))
            .execute(pool)
            .await?;
    }
    findings.read_models_checked = true;
    Ok(())
}
