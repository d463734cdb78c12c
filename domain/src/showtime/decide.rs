//! The showtime's rules: one function per command, each returning the events to record or the
//! rule it broke. Nothing here mutates state; `Showtime::apply` folds the events afterwards.

use super::*;
use crate::money::Money;
use std::collections::HashSet;

type Decision = Result<Vec<ShowtimeEvent>, ShowtimeError>;

impl Showtime {
    pub(super) fn schedule(&self, c: Schedule) -> Decision {
        if self.exists() {
            return Err(ShowtimeError::AlreadyScheduled);
        }
        if c.details.ends_at <= c.details.starts_at {
            return Err(ShowtimeError::BadTimes);
        }
        let layout = SeatLayout::parse(&c.details.layout).map_err(|_| ShowtimeError::BadLayout)?;
        check_prices(&layout, &c.details.prices)?;
        Ok(vec![ShowtimeEvent::ShowtimeScheduled {
            id: c.id,
            details: c.details,
            scheduled_at: c.now,
        }])
    }

    /// Whether the showtime still takes holds at `now` (it exists, is not cancelled and has
    /// not started), by the same rule its decisions use.
    pub fn takes_holds_at(&self, now: DateTime<Utc>) -> bool {
        self.open_at(self.effective_now(now)).is_ok()
    }

    /// The details of a showtime that still sells seats at `now`.
    fn open_at(&self, now: DateTime<Utc>) -> Result<&ShowtimeDetails, ShowtimeError> {
        let details = self.details.as_ref().ok_or(ShowtimeError::NotFound)?;
        if self.cancelled_at.is_some() || now >= details.starts_at {
            return Err(ShowtimeError::ShowtimeClosed);
        }
        Ok(details)
    }

    pub(super) fn hold_seats(&self, c: HoldSeats) -> Decision {
        let now = self.effective_now(c.now);
        self.open_at(now)?;
        if self.holds.contains_key(&c.reservation_id) {
            return Err(ShowtimeError::DuplicateReservation);
        }
        self.check_seat_choice(&c.seats)?;
        let row_started_at = self.row_to_continue(&c, now)?;
        // The customer's earlier unpaid hold gives way to the new one, so its seats count as
        // free for this decision.
        let replaced = self
            .customer_row
            .get(&c.customer_id)
            .and_then(|row| self.holds.get(&row.last))
            .filter(|h| h.status == HoldStatus::Held && h.is_live(now))
            .map(|h| h.id);
        let taken: Vec<SeatLabel> = c
            .seats
            .iter()
            .filter(|s| self.is_taken(s, now, replaced))
            .cloned()
            .collect();
        if !taken.is_empty() {
            return Err(ShowtimeError::SeatsUnavailable(taken));
        }
        let total = self.total_of(&c.seats);
        let mut events = Vec::with_capacity(2);
        if let Some(reservation_id) = replaced {
            events.push(ShowtimeEvent::HoldReleased {
                reservation_id,
                reason: ReleaseReason::Replaced,
                released_at: now,
            });
        }
        events.push(ShowtimeEvent::SeatsHeld(SeatsHeld {
            reservation_id: c.reservation_id,
            customer_id: c.customer_id,
            seats: c.seats,
            total,
            held_at: now,
            expires_at: row_started_at.unwrap_or(now) + c.hold_for,
            row_started_at,
        }));
        Ok(events)
    }

    /// The start of the customer's row of holds that a hold at `now` continues, `None` when it
    /// starts a row of its own, or the cooldown to wait out when the row's window is used up.
    /// Renewing a hold therefore never keeps seats past the row's first deadline.
    fn row_to_continue(
        &self,
        c: &HoldSeats,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ShowtimeError> {
        let Some(row) = self.customer_row.get(&c.customer_id) else {
            return Ok(None);
        };
        // Kept while open or paid; a released or run-out hold is dropped (its row remembers
        // when it closed).
        let last = self.holds.get(&row.last);
        // Paying ends the row at once: a customer may buy more seats right after.
        if last.is_some_and(|h| matches!(h.status, HoldStatus::Confirmed { .. })) {
            return Ok(None);
        }
        // When the last hold stopped keeping its seats (released, expired), or will (its
        // deadline, also when it ran out unrecorded). Every other hold has one or the other.
        let Some(end) = last.and_then(Hold::deadline).or(row.last_closed_at) else {
            return Ok(None);
        };
        if !last.is_some_and(|h| h.is_live(now)) && now >= end + c.cooldown {
            return Ok(None);
        }
        if now < row.started_at + c.hold_for {
            return Ok(Some(row.started_at));
        }
        Err(ShowtimeError::HoldCooldown {
            retry_at: end + c.cooldown,
        })
    }

    fn check_seat_choice(&self, seats: &[SeatLabel]) -> Result<(), ShowtimeError> {
        if seats.is_empty() {
            return Err(ShowtimeError::NoSeats);
        }
        if seats.len() > MAX_SEATS_PER_HOLD {
            return Err(ShowtimeError::TooManySeats);
        }
        let mut seen = HashSet::new();
        if let Some(dup) = seats.iter().find(|s| !seen.insert(*s)) {
            return Err(ShowtimeError::DuplicateSeat(dup.clone()));
        }
        let unknown: Vec<SeatLabel> = seats
            .iter()
            .filter(|s| self.seat_kind(s).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ShowtimeError::UnknownSeats(unknown));
        }
        Ok(())
    }

    fn is_taken(
        &self,
        seat: &SeatLabel,
        now: DateTime<Utc>,
        except: Option<ReservationId>,
    ) -> bool {
        if self.sold.contains_key(seat) {
            return true;
        }
        self.live_holder(seat, now)
            .is_some_and(|h| Some(h.id) != except)
    }

    fn total_of(&self, seats: &[SeatLabel]) -> Money {
        let prices = seats
            .iter()
            .filter_map(|s| self.seat_kind(s).and_then(|k| self.price_of(k)));
        let mut total: Option<Money> = None;
        for p in prices {
            total = Some(match total {
                // Prices share one currency (checked at scheduling) and are bounded, so at
                // most ten of them cannot overflow.
                Some(t) => t
                    .checked_add(p)
                    .expect("prices share a currency and are bounded"),
                None => p.clone(),
            });
        }
        total.expect("a hold has at least one priced seat")
    }

    fn own_hold(&self, id: ReservationId, customer: UserId) -> Result<&Hold, ShowtimeError> {
        self.holds
            .get(&id)
            .filter(|h| h.customer_id == customer)
            .ok_or(ShowtimeError::ReservationNotFound)
    }

    pub(super) fn release_hold(&self, c: ReleaseHold) -> Decision {
        let now = self.effective_now(c.now);
        let hold = self.own_hold(c.reservation_id, c.customer_id)?;
        match hold.status {
            HoldStatus::Confirmed { .. } => Err(ShowtimeError::AlreadyPaid),
            HoldStatus::Paying { .. } if hold.is_live(now) => Err(ShowtimeError::PaymentInProgress),
            HoldStatus::Held if hold.is_live(now) => Ok(vec![ShowtimeEvent::HoldReleased {
                reservation_id: hold.id,
                reason: ReleaseReason::Customer,
                released_at: now,
            }]),
            // Already released or run out: the seats are free, nothing to record.
            _ => Ok(vec![]),
        }
    }

    pub(super) fn expire_hold(&self, c: ExpireHold) -> Decision {
        let now = self.effective_now(c.now);
        let hold = self
            .holds
            .get(&c.reservation_id)
            .ok_or(ShowtimeError::ReservationNotFound)?;
        match hold.deadline() {
            None => Ok(vec![]),
            Some(deadline) if now >= deadline => Ok(vec![ShowtimeEvent::HoldExpired {
                reservation_id: hold.id,
                expired_at: deadline,
            }]),
            Some(_) => Err(ShowtimeError::NotExpiredYet),
        }
    }

    pub(super) fn start_payment(&self, c: StartPayment) -> Decision {
        let now = self.effective_now(c.now);
        let hold = self.own_hold(c.reservation_id, c.customer_id)?;
        // One id, one charge: a processor deduplicates by it.
        if self.payments.contains_key(&c.payment_id) {
            return Err(ShowtimeError::DuplicatePayment);
        }
        match hold.status {
            HoldStatus::Confirmed { .. } => return Err(ShowtimeError::AlreadyPaid),
            HoldStatus::Paying { .. } if hold.is_live(now) => {
                return Err(ShowtimeError::PaymentInProgress)
            }
            HoldStatus::Held if hold.is_live(now) => {}
            _ => return Err(ShowtimeError::ReservationExpired),
        }
        self.open_at(now)?;
        Ok(vec![ShowtimeEvent::PaymentStarted(PaymentStarted {
            reservation_id: hold.id,
            payment_id: c.payment_id,
            amount: hold.total.clone(),
            started_at: now,
            pinned_until: now + c.pin_for,
        })])
    }

    /// A payment started for this reservation, in whatever state it is now.
    fn started_payment(
        &self,
        payment: PaymentId,
        reservation: ReservationId,
    ) -> Result<&Payment, ShowtimeError> {
        self.payments
            .get(&payment)
            .filter(|p| p.reservation_id == reservation)
            .ok_or(ShowtimeError::UnknownPayment(payment))
    }

    pub(super) fn confirm_payment(&self, c: ConfirmPayment) -> Decision {
        let now = self.effective_now(c.now);
        let payment = self.started_payment(c.payment_id, c.reservation_id)?;
        let refund = || {
            Ok(vec![ShowtimeEvent::PaymentRefunded {
                reservation_id: c.reservation_id,
                payment_id: c.payment_id,
                amount: payment.amount.clone(),
                refunded_at: now,
            }])
        };
        match payment.state {
            PaymentState::Started => {}
            // Recorded as failed before the processor's success came (it was asked while the
            // charge was still on its way): the money came all the same, and goes back.
            PaymentState::Failed => return refund(),
            // Settled with money already: ticketed or refunded once is enough.
            PaymentState::Captured | PaymentState::Refunded => return Ok(vec![]),
        }
        // A hold that was released or ran out is no longer kept: the seats may be gone.
        let Some(hold) = self.holds.get(&c.reservation_id) else {
            return refund();
        };
        let pinned_by_this = matches!(hold.status,
            HoldStatus::Paying { payment_id, .. } if payment_id == c.payment_id);
        if !(pinned_by_this && hold.is_live(now)) {
            return refund();
        }
        if c.tickets.len() != hold.seats.len() {
            return Err(ShowtimeError::TicketCountMismatch);
        }
        let tickets = hold
            .seats
            .iter()
            .zip(c.tickets)
            .map(|(seat, t)| IssuedTicket {
                ticket_id: t.id,
                seat: seat.clone(),
                price: self.seat_price(seat),
                code: t.code,
            })
            .collect();
        Ok(vec![ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: hold.id,
            payment_id: c.payment_id,
            customer_id: hold.customer_id,
            tickets,
            issued_at: now,
        })])
    }

    fn seat_price(&self, seat: &SeatLabel) -> Money {
        self.seat_kind(seat)
            .and_then(|k| self.price_of(k))
            .cloned()
            .expect("held seats exist and every kind is priced")
    }

    pub(super) fn fail_payment(&self, c: FailPayment) -> Decision {
        let now = self.effective_now(c.now);
        // Settled already, one way or the other: failing it now changes nothing.
        if self.started_payment(c.payment_id, c.reservation_id)?.state != PaymentState::Started {
            return Ok(vec![]);
        }
        Ok(vec![ShowtimeEvent::PaymentFailed(PaymentFailed {
            reservation_id: c.reservation_id,
            payment_id: c.payment_id,
            reason: c.reason,
            retryable: c.retryable,
            failed_at: now,
        })])
    }

    pub(super) fn cancel(&self, c: Cancel) -> Decision {
        let now = self.effective_now(c.now);
        if !self.exists() {
            return Err(ShowtimeError::NotFound);
        }
        if self.cancelled_at.is_some() {
            return Ok(vec![]);
        }
        let mut events = vec![ShowtimeEvent::ShowtimeCancelled { cancelled_at: now }];
        events.extend(self.open_holds().map(|h| ShowtimeEvent::HoldReleased {
            reservation_id: h.id,
            reason: ReleaseReason::ShowtimeCancelled,
            released_at: now,
        }));
        events.extend(
            self.tickets
                .values()
                .filter(|t| t.status == TicketStatus::Valid)
                .map(|t| {
                    ShowtimeEvent::TicketRefunded(TicketRefunded {
                        ticket_id: t.id,
                        reservation_id: t.reservation_id,
                        payment_id: t.payment_id,
                        amount: t.price.clone(),
                        refunded_at: now,
                    })
                }),
        );
        Ok(events)
    }
}

fn check_prices(
    layout: &SeatLayout,
    prices: &std::collections::BTreeMap<SeatKind, Money>,
) -> Result<(), ShowtimeError> {
    for kind in layout.kinds() {
        if !prices.contains_key(&kind) {
            return Err(ShowtimeError::UnpricedKind(kind));
        }
    }
    let mut currencies = prices.values().map(|m| &m.currency);
    if let Some(first) = currencies.next() {
        if currencies.any(|c| c != first) {
            return Err(ShowtimeError::MixedCurrencies);
        }
    }
    Ok(())
}
