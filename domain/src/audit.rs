//! An independent check of the booking invariants over a showtime's events.
//!
//! It does not reuse the aggregate's state: it re-reads the events with its own simple model
//! and reports any moment at which a seat was in two live holds, sold twice, sold without
//! exactly one valid ticket, or money moved twice. The property tests run it after random
//! command sequences; operators can run it over the whole log.

use crate::ids::*;
use crate::seating::SeatLabel;
use crate::showtime::ShowtimeEvent;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
struct AuditHold {
    seats: Vec<SeatLabel>,
    /// Keeps its seats while `clock < until`; `None` once closed.
    until: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    paying: Option<PaymentId>,
}

/// Folds events and remembers every invariant they break.
#[derive(Debug, Default)]
pub struct Auditor {
    clock: Option<DateTime<Utc>>,
    holds: HashMap<ReservationId, AuditHold>,
    valid_tickets: HashMap<SeatLabel, TicketId>,
    ticket_seats: HashMap<TicketId, SeatLabel>,
    refunded_tickets: HashSet<TicketId>,
    payments_started: HashMap<PaymentId, ReservationId>,
    payments_settled: HashSet<PaymentId>,
    /// Each broken invariant, described.
    pub violations: Vec<String>,
}

impl Auditor {
    /// Checks one event, in order.
    pub fn observe(&mut self, event: &ShowtimeEvent) {
        let t = event.time();
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        match event {
            ShowtimeEvent::SeatsHeld(e) => {
                self.holds.insert(
                    e.reservation_id,
                    AuditHold {
                        seats: e.seats.clone(),
                        until: Some(e.expires_at),
                        expires_at: e.expires_at,
                        paying: None,
                    },
                );
            }
            ShowtimeEvent::HoldReleased { reservation_id, .. }
            | ShowtimeEvent::HoldExpired { reservation_id, .. } => {
                if let Some(h) = self.holds.get_mut(reservation_id) {
                    h.until = None;
                    h.paying = None;
                }
            }
            ShowtimeEvent::PaymentStarted(e) => self.payment_started(e),
            ShowtimeEvent::PaymentFailed(e) => {
                self.settle(e.payment_id);
                if let Some(h) = self.holds.get_mut(&e.reservation_id) {
                    if h.paying == Some(e.payment_id) {
                        h.paying = None;
                        h.until = h.until.map(|u| u.min(h.expires_at));
                    }
                }
            }
            ShowtimeEvent::TicketsIssued(e) => self.tickets_issued(e),
            ShowtimeEvent::PaymentRefunded { payment_id, .. } => self.settle(*payment_id),
            ShowtimeEvent::TicketRefunded(e) => self.ticket_refunded(e.ticket_id),
            ShowtimeEvent::ShowtimeScheduled { .. } | ShowtimeEvent::ShowtimeCancelled { .. } => {}
        }
        self.check_live_holds();
    }

    fn payment_started(&mut self, e: &crate::showtime::PaymentStarted) {
        let now = self.clock.expect("set above");
        match self.holds.get_mut(&e.reservation_id) {
            Some(h) if h.until.is_some_and(|u| now < u) && h.paying.is_none() => {
                h.paying = Some(e.payment_id);
                h.until = Some(e.pinned_until);
            }
            _ => self.violations.push(format!(
                "payment {} started for reservation {} that was not live and unpaid",
                e.payment_id, e.reservation_id
            )),
        }
        if self
            .payments_started
            .insert(e.payment_id, e.reservation_id)
            .is_some()
        {
            self.violations
                .push(format!("payment {} started twice", e.payment_id));
        }
    }

    fn settle(&mut self, payment: PaymentId) {
        if !self.payments_started.contains_key(&payment) {
            self.violations
                .push(format!("payment {payment} settled but never started"));
        }
        if !self.payments_settled.insert(payment) {
            self.violations
                .push(format!("payment {payment} settled twice"));
        }
    }

    fn tickets_issued(&mut self, e: &crate::showtime::TicketsIssued) {
        let now = self.clock.expect("set above");
        self.settle(e.payment_id);
        let live_and_paying = self
            .holds
            .get(&e.reservation_id)
            .is_some_and(|h| h.paying == Some(e.payment_id) && h.until.is_some_and(|u| now < u));
        if !live_and_paying {
            self.violations.push(format!(
                "tickets issued for reservation {} that was not live and paying",
                e.reservation_id
            ));
        }
        for t in &e.tickets {
            if let Some(other) = self.valid_tickets.insert(t.seat.clone(), t.ticket_id) {
                self.violations.push(format!(
                    "seat {} sold twice ({other} and {})",
                    t.seat, t.ticket_id
                ));
            }
            self.ticket_seats.insert(t.ticket_id, t.seat.clone());
        }
        if let Some(h) = self.holds.get_mut(&e.reservation_id) {
            h.until = None;
            h.paying = None;
        }
    }

    fn ticket_refunded(&mut self, ticket: TicketId) {
        if !self.refunded_tickets.insert(ticket) {
            self.violations
                .push(format!("ticket {ticket} refunded twice"));
            return;
        }
        match self.ticket_seats.get(&ticket) {
            Some(seat) if self.valid_tickets.get(seat) == Some(&ticket) => {
                self.valid_tickets.remove(seat);
            }
            _ => self
                .violations
                .push(format!("ticket {ticket} refunded but not valid")),
        }
    }

    fn check_live_holds(&mut self) {
        let now = self.clock.expect("set above");
        let mut owner: HashMap<&SeatLabel, ReservationId> = HashMap::new();
        let mut found = Vec::new();
        for (id, h) in &self.holds {
            if h.until.is_none_or(|u| now >= u) {
                continue;
            }
            for seat in &h.seats {
                if let Some(other) = owner.insert(seat, *id) {
                    found.push(format!("seat {seat} in two live holds ({other} and {id})"));
                }
                if self.valid_tickets.contains_key(seat) {
                    found.push(format!("seat {seat} held by {id} while sold"));
                }
            }
        }
        self.violations.extend(found);
    }
}

/// Audits a whole sequence of events and returns what it broke.
pub fn audit<'a>(events: impl IntoIterator<Item = &'a ShowtimeEvent>) -> Vec<String> {
    let mut auditor = Auditor::default();
    for e in events {
        auditor.observe(e);
    }
    auditor.violations
}
