//! Given/when/then tests, one per rule of the showtime.

use super::*;
use crate::money::{Currency, Money};
use chrono::{TimeDelta, TimeZone};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

type Given = TestFramework<Showtime>;

pub(super) fn t(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 18, 0, 0).unwrap() + TimeDelta::minutes(minute)
}
pub(super) fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}
pub(super) fn seat(s: &str) -> SeatLabel {
    SeatLabel::parse(s).unwrap()
}
fn seats(list: &[&str]) -> Vec<SeatLabel> {
    list.iter().map(|s| seat(s)).collect()
}
pub(super) fn res(n: u128) -> ReservationId {
    ReservationId(Uuid::from_u128(n))
}
pub(super) fn user(n: u128) -> UserId {
    UserId(Uuid::from_u128(0x1000 + n))
}
pub(super) fn pay(n: u128) -> PaymentId {
    PaymentId(Uuid::from_u128(0x2000 + n))
}
pub(super) fn ticket(n: u128) -> TicketId {
    TicketId(Uuid::from_u128(0x3000 + n))
}
const HOLD: TimeDelta = TimeDelta::minutes(7);
const PIN: TimeDelta = TimeDelta::minutes(10);
const COOLDOWN: TimeDelta = TimeDelta::minutes(5);

/// Starts at minute 120; row A is standard (A1..A4), row B premium (B1..B4).
pub(super) fn details() -> ShowtimeDetails {
    ShowtimeDetails {
        movie_id: MovieId(Uuid::from_u128(1)),
        theater_id: TheaterId(Uuid::from_u128(2)),
        screen_id: ScreenId(Uuid::from_u128(3)),
        starts_at: t(120),
        ends_at: t(240),
        format: None,
        layout: vec!["ss.ss".into(), "pppp".into()],
        prices: [
            (SeatKind::Standard, usd(1000)),
            (SeatKind::Premium, usd(1500)),
        ]
        .into(),
    }
}
pub(super) fn scheduled() -> ShowtimeEvent {
    ShowtimeEvent::ShowtimeScheduled {
        id: ShowtimeId(Uuid::from_u128(9)),
        details: details(),
        scheduled_at: t(-1000),
    }
}
fn hold_cmd(r: u128, u: u128, s: &[&str], at: i64) -> ShowtimeCommand {
    ShowtimeCommand::HoldSeats(HoldSeats {
        reservation_id: res(r),
        customer_id: user(u),
        seats: seats(s),
        hold_for: HOLD,
        cooldown: COOLDOWN,
        now: t(at),
    })
}
fn held(r: u128, u: u128, s: &[&str], total: i64, at: i64) -> ShowtimeEvent {
    ShowtimeEvent::SeatsHeld(SeatsHeld {
        reservation_id: res(r),
        customer_id: user(u),
        seats: seats(s),
        total: usd(total),
        held_at: t(at),
        expires_at: t(at) + HOLD,
        row_started_at: None,
    })
}
/// A hold that continues the customer's row started at minute `row`: it ends with the row.
fn renewed(r: u128, u: u128, s: &[&str], total: i64, at: i64, row: i64) -> ShowtimeEvent {
    ShowtimeEvent::SeatsHeld(SeatsHeld {
        expires_at: t(row) + HOLD,
        row_started_at: Some(t(row)),
        ..match held(r, u, s, total, at) {
            ShowtimeEvent::SeatsHeld(e) => e,
            _ => unreachable!("held() builds SeatsHeld"),
        }
    })
}
fn released(r: u128, reason: ReleaseReason, at: i64) -> ShowtimeEvent {
    ShowtimeEvent::HoldReleased {
        reservation_id: res(r),
        reason,
        released_at: t(at),
    }
}
fn start_cmd(r: u128, u: u128, p: u128, at: i64) -> ShowtimeCommand {
    ShowtimeCommand::StartPayment(StartPayment {
        reservation_id: res(r),
        customer_id: user(u),
        payment_id: pay(p),
        pin_for: PIN,
        now: t(at),
    })
}
fn started(r: u128, p: u128, amount: i64, at: i64) -> ShowtimeEvent {
    ShowtimeEvent::PaymentStarted(PaymentStarted {
        reservation_id: res(r),
        payment_id: pay(p),
        amount: usd(amount),
        started_at: t(at),
        pinned_until: t(at) + PIN,
    })
}
fn confirm_cmd(r: u128, p: u128, tickets: &[u128], at: i64) -> ShowtimeCommand {
    ShowtimeCommand::ConfirmPayment(ConfirmPayment {
        reservation_id: res(r),
        payment_id: pay(p),
        tickets: tickets
            .iter()
            .map(|n| NewTicket {
                id: ticket(*n),
                code: format!("CODE{n}"),
            })
            .collect(),
        now: t(at),
    })
}

#[test]
fn holding_free_seats_records_the_hold_with_its_total_and_expiry() {
    Given::with(())
        .given(vec![scheduled()])
        .when(hold_cmd(1, 1, &["A1", "B2"], 0))
        .then_expect_events(vec![held(1, 1, &["A1", "B2"], 2500, 0)]);
}

#[test]
fn holding_a_held_seat_names_the_taken_seats() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1", "A2"], 2000, 0)])
        .when(hold_cmd(2, 2, &["A2", "A3", "A1"], 1))
        .then_expect_error(ShowtimeError::SeatsUnavailable(seats(&["A2", "A1"])));
}

#[test]
fn holds_are_all_or_nothing() {
    let result = Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(hold_cmd(2, 2, &["A1", "A2"], 1))
        .inspect_result();
    assert!(result.is_err(), "no event may be recorded for A2 alone");
}

#[test]
fn an_expired_hold_frees_its_seats_at_once_even_unrecorded() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(hold_cmd(2, 2, &["A1"], 7))
        .then_expect_events(vec![held(2, 2, &["A1"], 1000, 7)]);
}

#[test]
fn a_hold_is_still_live_just_before_it_expires() {
    let mut cmd = hold_cmd(2, 2, &["A1"], 0);
    if let ShowtimeCommand::HoldSeats(c) = &mut cmd {
        c.now = t(7) - TimeDelta::milliseconds(1);
    }
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(cmd)
        .then_expect_error(ShowtimeError::SeatsUnavailable(seats(&["A1"])));
}

#[test]
fn holding_a_sold_seat_is_rejected() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 1),
            ShowtimeEvent::TicketsIssued(TicketsIssued {
                reservation_id: res(1),
                payment_id: pay(1),
                customer_id: user(1),
                tickets: vec![IssuedTicket {
                    ticket_id: ticket(1),
                    seat: seat("A1"),
                    price: usd(1000),
                    code: "X".into(),
                }],
                issued_at: t(2),
            }),
        ])
        .when(hold_cmd(2, 2, &["A1"], 60))
        .then_expect_error(ShowtimeError::SeatsUnavailable(seats(&["A1"])));
}

#[test]
fn a_new_hold_releases_the_customers_earlier_unpaid_hold() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1", "A2"], 2000, 0)])
        .when(hold_cmd(2, 1, &["A2", "A3"], 1))
        .then_expect_events(vec![
            released(1, ReleaseReason::Replaced, 1),
            renewed(2, 1, &["A2", "A3"], 2000, 1, 0),
        ]);
}

#[test]
fn a_paying_hold_is_not_replaced_by_a_new_hold() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 1),
        ])
        .when(hold_cmd(2, 1, &["A1"], 2))
        .then_expect_error(ShowtimeError::SeatsUnavailable(seats(&["A1"])));
}

#[test]
fn seat_choice_must_be_one_to_ten_distinct_known_seats() {
    let given = || Given::with(()).given(vec![scheduled()]);
    given()
        .when(hold_cmd(1, 1, &[], 0))
        .then_expect_error(ShowtimeError::NoSeats);
    let eleven = [
        "A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4", "C1", "C2", "C3",
    ];
    given()
        .when(hold_cmd(1, 1, &eleven, 0))
        .then_expect_error(ShowtimeError::TooManySeats);
    given()
        .when(hold_cmd(1, 1, &["A1", "A1"], 0))
        .then_expect_error(ShowtimeError::DuplicateSeat(seat("A1")));
    given()
        .when(hold_cmd(1, 1, &["A1", "A5", "Z1"], 0))
        .then_expect_error(ShowtimeError::UnknownSeats(seats(&["A5", "Z1"])));
}

#[test]
fn holding_after_the_start_or_on_a_cancelled_showtime_is_closed() {
    Given::with(())
        .given(vec![scheduled()])
        .when(hold_cmd(1, 1, &["A1"], 120))
        .then_expect_error(ShowtimeError::ShowtimeClosed);
    Given::with(())
        .given(vec![
            scheduled(),
            ShowtimeEvent::ShowtimeCancelled { cancelled_at: t(0) },
        ])
        .when(hold_cmd(1, 1, &["A1"], 1))
        .then_expect_error(ShowtimeError::ShowtimeClosed);
    Given::with(())
        .given_no_previous_events()
        .when(hold_cmd(1, 1, &["A1"], 1))
        .then_expect_error(ShowtimeError::NotFound);
}

#[test]
fn a_reservation_id_is_used_once() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(hold_cmd(1, 2, &["A2"], 1))
        .then_expect_error(ShowtimeError::DuplicateReservation);
}

#[test]
fn time_never_runs_backwards_inside_a_showtime() {
    // Reservation 2 took A1 at minute 8 (after 1 expired at 7). A payment for reservation 1
    // stamped minute 6 arrives late: it must be refused, not revive the hold.
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            held(2, 2, &["A1"], 1000, 8),
        ])
        .when(start_cmd(1, 1, 1, 6))
        .then_expect_error(ShowtimeError::ReservationExpired);
}

#[test]
fn releasing_a_hold_frees_it_and_only_the_owner_may() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: res(1),
            customer_id: user(1),
            now: t(1),
        }))
        .then_expect_events(vec![ShowtimeEvent::HoldReleased {
            reservation_id: res(1),
            reason: ReleaseReason::Customer,
            released_at: t(1),
        }]);
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: res(1),
            customer_id: user(2),
            now: t(1),
        }))
        .then_expect_error(ShowtimeError::ReservationNotFound);
}

#[test]
fn releasing_a_paid_or_paying_hold_is_refused() {
    let release = || {
        ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: res(1),
            customer_id: user(1),
            now: t(2),
        })
    };
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 1),
        ])
        .when(release())
        .then_expect_error(ShowtimeError::PaymentInProgress);
}

#[test]
fn the_timer_records_an_expiry_only_once_it_is_due() {
    let expire = |at| {
        ShowtimeCommand::ExpireHold(ExpireHold {
            reservation_id: res(1),
            now: t(at),
        })
    };
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(expire(6))
        .then_expect_error(ShowtimeError::NotExpiredYet);
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(expire(9))
        .then_expect_events(vec![ShowtimeEvent::HoldExpired {
            reservation_id: res(1),
            expired_at: t(7),
        }]);
}

#[test]
fn a_paying_hold_does_not_expire_until_its_pin_runs_out() {
    let given = vec![
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        started(1, 1, 1000, 5),
    ];
    Given::with(())
        .given(given.clone())
        .when(hold_cmd(2, 2, &["A1"], 8))
        .then_expect_error(ShowtimeError::SeatsUnavailable(seats(&["A1"])));
    Given::with(())
        .given(given)
        .when(hold_cmd(2, 2, &["A1"], 15))
        .then_expect_events(vec![held(2, 2, &["A1"], 1000, 15)]);
}

#[test]
fn payment_starts_only_on_a_live_unpaid_own_hold() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1", "B1"], 2500, 0)])
        .when(start_cmd(1, 1, 1, 3))
        .then_expect_events(vec![started(1, 1, 2500, 3)]);
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(start_cmd(1, 1, 1, 7))
        .then_expect_error(ShowtimeError::ReservationExpired);
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 1),
        ])
        .when(start_cmd(1, 1, 2, 2))
        .then_expect_error(ShowtimeError::PaymentInProgress);
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(start_cmd(1, 2, 1, 1))
        .then_expect_error(ShowtimeError::ReservationNotFound);
}

#[test]
fn a_confirmed_payment_issues_one_ticket_per_seat() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1", "B1"], 2500, 0),
            started(1, 1, 2500, 3),
        ])
        .when(confirm_cmd(1, 1, &[1, 2], 4))
        .then_expect_events(vec![ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: res(1),
            payment_id: pay(1),
            customer_id: user(1),
            tickets: vec![
                IssuedTicket {
                    ticket_id: ticket(1),
                    seat: seat("A1"),
                    price: usd(1000),
                    code: "CODE1".into(),
                },
                IssuedTicket {
                    ticket_id: ticket(2),
                    seat: seat("B1"),
                    price: usd(1500),
                    code: "CODE2".into(),
                },
            ],
            issued_at: t(4),
        })]);
}

#[test]
fn a_payment_that_succeeds_after_the_pin_ran_out_is_refunded() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
        ])
        .when(confirm_cmd(1, 1, &[1], 14))
        .then_expect_events(vec![ShowtimeEvent::PaymentRefunded {
            reservation_id: res(1),
            payment_id: pay(1),
            amount: usd(1000),
            refunded_at: t(14),
        }]);
}

#[test]
fn a_payment_that_succeeds_after_cancellation_is_refunded() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
            ShowtimeEvent::ShowtimeCancelled { cancelled_at: t(4) },
            ShowtimeEvent::HoldReleased {
                reservation_id: res(1),
                reason: ReleaseReason::ShowtimeCancelled,
                released_at: t(4),
            },
        ])
        .when(confirm_cmd(1, 1, &[1], 5))
        .then_expect_events(vec![ShowtimeEvent::PaymentRefunded {
            reservation_id: res(1),
            payment_id: pay(1),
            amount: usd(1000),
            refunded_at: t(5),
        }]);
}

#[test]
fn a_success_for_a_payment_already_recorded_as_failed_is_refunded() {
    let failed = ShowtimeEvent::PaymentFailed(PaymentFailed {
        reservation_id: res(1),
        payment_id: pay(1),
        reason: "processor_unavailable".into(),
        retryable: true,
        failed_at: t(4),
    });
    // Even while the hold is live again and waits for another payment.
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
            failed,
            started(1, 2, 1000, 5),
        ])
        .when(confirm_cmd(1, 1, &[1], 6))
        .then_expect_events(vec![ShowtimeEvent::PaymentRefunded {
            reservation_id: res(1),
            payment_id: pay(1),
            amount: usd(1000),
            refunded_at: t(6),
        }]);
}

#[test]
fn a_second_success_for_a_refunded_payment_changes_nothing() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
            ShowtimeEvent::PaymentRefunded {
                reservation_id: res(1),
                payment_id: pay(1),
                amount: usd(1000),
                refunded_at: t(14),
            },
        ])
        .when(confirm_cmd(1, 1, &[1], 15))
        .then_expect_events(vec![]);
}

#[test]
fn a_payment_id_already_used_cannot_start_another_payment() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 5, 1000, 3),
            held(2, 2, &["A2"], 1000, 4),
        ])
        .when(start_cmd(2, 2, 5, 5))
        .then_expect_error(ShowtimeError::DuplicatePayment);
}

#[test]
fn confirming_twice_changes_nothing() {
    let issued = ShowtimeEvent::TicketsIssued(TicketsIssued {
        reservation_id: res(1),
        payment_id: pay(1),
        customer_id: user(1),
        tickets: vec![IssuedTicket {
            ticket_id: ticket(1),
            seat: seat("A1"),
            price: usd(1000),
            code: "X".into(),
        }],
        issued_at: t(4),
    });
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
            issued,
        ])
        .when(confirm_cmd(1, 1, &[5], 5))
        .then_expect_events(vec![]);
}

#[test]
fn a_declined_payment_leaves_the_hold_until_it_expires() {
    let failed = ShowtimeEvent::PaymentFailed(PaymentFailed {
        reservation_id: res(1),
        payment_id: pay(1),
        reason: "card_declined".into(),
        retryable: true,
        failed_at: t(4),
    });
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
        ])
        .when(ShowtimeCommand::FailPayment(FailPayment {
            reservation_id: res(1),
            payment_id: pay(1),
            reason: "card_declined".into(),
            retryable: true,
            now: t(4),
        }))
        .then_expect_events(vec![failed.clone()]);
    let given = vec![
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        started(1, 1, 1000, 3),
        failed,
    ];
    Given::with(())
        .given(given.clone())
        .when(start_cmd(1, 1, 2, 5))
        .then_expect_events(vec![started(1, 2, 1000, 5)]);
    Given::with(())
        .given(given)
        .when(hold_cmd(2, 2, &["A1"], 7))
        .then_expect_events(vec![held(2, 2, &["A1"], 1000, 7)]);
}

#[test]
fn a_failed_payment_never_stretches_a_hold_past_its_pin() {
    // A short pin (1 minute) ran out at minute 2; someone else took A1 at minute 3. The late
    // failure must not give reservation 1 its seat back until minute 7.
    let short_pin = ShowtimeEvent::PaymentStarted(PaymentStarted {
        reservation_id: res(1),
        payment_id: pay(1),
        amount: usd(1000),
        started_at: t(1),
        pinned_until: t(2),
    });
    let mut state = Showtime::default();
    for e in [
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        short_pin,
        held(2, 2, &["A1"], 1000, 3),
        ShowtimeEvent::PaymentFailed(PaymentFailed {
            reservation_id: res(1),
            payment_id: pay(1),
            reason: "card_declined".into(),
            retryable: true,
            failed_at: t(4),
        }),
    ] {
        state.apply(e);
    }
    assert!(!state.holds[&res(1)].is_live(t(4)));
    assert_eq!(state.seat_state(&seat("A1"), t(4)), SeatState::Held(res(2)));
}

#[test]
fn cancelling_releases_holds_and_refunds_tickets() {
    let issued = ShowtimeEvent::TicketsIssued(TicketsIssued {
        reservation_id: res(1),
        payment_id: pay(1),
        customer_id: user(1),
        tickets: vec![IssuedTicket {
            ticket_id: ticket(1),
            seat: seat("A1"),
            price: usd(1000),
            code: "X".into(),
        }],
        issued_at: t(4),
    });
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 3),
            issued,
            held(2, 2, &["A2"], 1000, 5),
        ])
        .when(ShowtimeCommand::Cancel(Cancel { now: t(6) }))
        .then_expect_events(vec![
            ShowtimeEvent::ShowtimeCancelled { cancelled_at: t(6) },
            ShowtimeEvent::HoldReleased {
                reservation_id: res(2),
                reason: ReleaseReason::ShowtimeCancelled,
                released_at: t(6),
            },
            ShowtimeEvent::TicketRefunded(TicketRefunded {
                ticket_id: ticket(1),
                reservation_id: res(1),
                payment_id: pay(1),
                amount: usd(1000),
                refunded_at: t(6),
            }),
        ]);
}

#[test]
fn cancelling_twice_refunds_nothing_twice() {
    Given::with(())
        .given(vec![
            scheduled(),
            ShowtimeEvent::ShowtimeCancelled { cancelled_at: t(0) },
        ])
        .when(ShowtimeCommand::Cancel(Cancel { now: t(1) }))
        .then_expect_events(vec![]);
}

#[test]
fn every_seat_kind_of_the_screen_needs_a_price_in_one_currency() {
    let mut d = details();
    d.prices.remove(&SeatKind::Premium);
    Given::with(())
        .given_no_previous_events()
        .when(ShowtimeCommand::Schedule(Schedule {
            id: ShowtimeId(Uuid::from_u128(9)),
            details: d,
            now: t(0),
        }))
        .then_expect_error(ShowtimeError::UnpricedKind(SeatKind::Premium));
    let mut d = details();
    d.prices.insert(
        SeatKind::Premium,
        Money::new(5, Currency::parse("EUR").unwrap()).unwrap(),
    );
    Given::with(())
        .given_no_previous_events()
        .when(ShowtimeCommand::Schedule(Schedule {
            id: ShowtimeId(Uuid::from_u128(9)),
            details: d,
            now: t(0),
        }))
        .then_expect_error(ShowtimeError::MixedCurrencies);
}

#[test]
fn a_showtime_is_scheduled_once() {
    Given::with(())
        .given_no_previous_events()
        .when(ShowtimeCommand::Schedule(Schedule {
            id: ShowtimeId(Uuid::from_u128(9)),
            details: details(),
            now: t(-1000),
        }))
        .then_expect_events(vec![scheduled()]);
    Given::with(())
        .given(vec![scheduled()])
        .when(ShowtimeCommand::Schedule(Schedule {
            id: ShowtimeId(Uuid::from_u128(9)),
            details: details(),
            now: t(0),
        }))
        .then_expect_error(ShowtimeError::AlreadyScheduled);
}

// Holding again does not extend the clock (hoarding by renewal). HOLD is 7 minutes and
// COOLDOWN 5: a row of holds started at minute 0 ends at minute 7 at the latest.

fn issued(r: u128, u: u128, p: u128, tk: u128, s: &str, at: i64) -> ShowtimeEvent {
    ShowtimeEvent::TicketsIssued(TicketsIssued {
        reservation_id: res(r),
        payment_id: pay(p),
        customer_id: user(u),
        tickets: vec![IssuedTicket {
            ticket_id: ticket(tk),
            seat: seat(s),
            price: usd(1000),
            code: "X".into(),
        }],
        issued_at: t(at),
    })
}

/// Customer 1 held A1 at minute 0 and the same seat again at minute 5: the row ends at 7.
fn renewed_until_7() -> Vec<ShowtimeEvent> {
    vec![
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        released(1, ReleaseReason::Replaced, 5),
        renewed(2, 1, &["A1"], 1000, 5, 0),
    ]
}

#[test]
fn holding_the_same_seats_again_keeps_the_first_holds_deadline() {
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1", "A2"], 2000, 0)])
        .when(hold_cmd(2, 1, &["A1", "A2"], 5))
        .then_expect_events(vec![
            released(1, ReleaseReason::Replaced, 5),
            renewed(2, 1, &["A1", "A2"], 2000, 5, 0),
        ]);
}

#[test]
fn changing_seats_three_times_within_the_window_is_allowed_and_keeps_the_deadline() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            released(1, ReleaseReason::Replaced, 2),
            renewed(2, 1, &["A2"], 1000, 2, 0),
            released(2, ReleaseReason::Replaced, 4),
            renewed(3, 1, &["A3"], 1000, 4, 0),
        ])
        .when(hold_cmd(4, 1, &["B1"], 6))
        .then_expect_events(vec![
            released(3, ReleaseReason::Replaced, 6),
            renewed(4, 1, &["B1"], 1500, 6, 0),
        ]);
}

#[test]
fn after_the_window_the_customer_is_refused_until_the_cooldown_has_passed() {
    // The row's last hold ran out at 7 (unrecorded), so holding is possible again from 12.
    for at in [7, 9, 11] {
        Given::with(())
            .given(renewed_until_7())
            .when(hold_cmd(3, 1, &["A2"], at))
            .then_expect_error(ShowtimeError::HoldCooldown { retry_at: t(12) });
    }
    // A customer who let go at 6 waits from there: until 11.
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            released(1, ReleaseReason::Customer, 6),
        ])
        .when(hold_cmd(2, 1, &["A1"], 8))
        .then_expect_error(ShowtimeError::HoldCooldown { retry_at: t(11) });
}

#[test]
fn after_the_cooldown_the_customer_gets_a_new_full_window() {
    Given::with(())
        .given(renewed_until_7())
        .when(hold_cmd(3, 1, &["A1"], 12))
        .then_expect_events(vec![held(3, 1, &["A1"], 1000, 12)]);
    // The same when the timer recorded the expiry.
    let mut expired = renewed_until_7();
    expired.push(ShowtimeEvent::HoldExpired {
        reservation_id: res(2),
        expired_at: t(7),
    });
    Given::with(())
        .given(expired.clone())
        .when(hold_cmd(3, 1, &["A1"], 11))
        .then_expect_error(ShowtimeError::HoldCooldown { retry_at: t(12) });
    Given::with(())
        .given(expired)
        .when(hold_cmd(3, 1, &["A1"], 12))
        .then_expect_events(vec![held(3, 1, &["A1"], 1000, 12)]);
}

#[test]
fn letting_go_and_picking_again_after_a_pause_of_the_cooldown_gets_a_full_window() {
    let let_go_at_2 = vec![
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        released(1, ReleaseReason::Customer, 2),
    ];
    Given::with(())
        .given(let_go_at_2.clone())
        .when(hold_cmd(2, 1, &["A2"], 7))
        .then_expect_events(vec![held(2, 1, &["A2"], 1000, 7)]);
    // A shorter pause continues the row: the new hold ends with it.
    Given::with(())
        .given(let_go_at_2)
        .when(hold_cmd(2, 1, &["A2"], 6))
        .then_expect_events(vec![renewed(2, 1, &["A2"], 1000, 6, 0)]);
}

#[test]
fn paying_ends_the_row_with_no_cooldown() {
    let paid_at_2 = vec![
        scheduled(),
        held(1, 1, &["A1"], 1000, 0),
        started(1, 1, 1000, 1),
        issued(1, 1, 1, 1, "A1", 2),
    ];
    for at in [3, 8] {
        Given::with(())
            .given(paid_at_2.clone())
            .when(hold_cmd(2, 1, &["A2"], at))
            .then_expect_events(vec![held(2, 1, &["A2"], 1000, at)]);
    }
}

#[test]
fn a_failed_payment_leaves_the_hold_in_its_row() {
    Given::with(())
        .given(vec![
            scheduled(),
            held(1, 1, &["A1"], 1000, 0),
            started(1, 1, 1000, 1),
            ShowtimeEvent::PaymentFailed(PaymentFailed {
                reservation_id: res(1),
                payment_id: pay(1),
                reason: "card_declined".into(),
                retryable: true,
                failed_at: t(2),
            }),
        ])
        .when(hold_cmd(2, 1, &["A2"], 3))
        .then_expect_events(vec![
            released(1, ReleaseReason::Replaced, 3),
            renewed(2, 1, &["A2"], 1000, 3, 0),
        ]);
}

#[test]
fn another_customers_cooldown_does_not_affect_a_customer() {
    Given::with(())
        .given(renewed_until_7())
        .when(hold_cmd(3, 2, &["A1"], 8))
        .then_expect_events(vec![held(3, 2, &["A1"], 1000, 8)]);
}

#[test]
fn without_a_cooldown_holding_again_still_keeps_the_deadline_but_a_new_row_starts_at_its_end() {
    let no_cooldown = |r: u128, at: i64| match hold_cmd(r, 1, &["A1"], at) {
        ShowtimeCommand::HoldSeats(c) => ShowtimeCommand::HoldSeats(HoldSeats {
            cooldown: TimeDelta::zero(),
            ..c
        }),
        _ => unreachable!("hold_cmd builds HoldSeats"),
    };
    Given::with(())
        .given(vec![scheduled(), held(1, 1, &["A1"], 1000, 0)])
        .when(no_cooldown(2, 5))
        .then_expect_events(vec![
            released(1, ReleaseReason::Replaced, 5),
            renewed(2, 1, &["A1"], 1000, 5, 0),
        ]);
    Given::with(())
        .given(renewed_until_7())
        .when(no_cooldown(3, 7))
        .then_expect_events(vec![held(3, 1, &["A1"], 1000, 7)]);
}

#[test]
fn a_seats_held_event_from_before_rows_starts_a_row_of_its_own() {
    let old = r#"{"SeatsHeld": {"reservation_id": "00000000-0000-0000-0000-000000000001",
        "customer_id": "00000000-0000-0000-0000-000000001001", "seats": ["A1"],
        "total": {"amount": 1000, "currency": "USD"},
        "held_at": "2030-01-01T18:00:00Z", "expires_at": "2030-01-01T18:07:00Z"}}"#;
    let old: ShowtimeEvent = serde_json::from_str(old).unwrap();
    assert_eq!(old, held(1, 1, &["A1"], 1000, 0));
    // Holding again at 5 continues that row: it ends at 7, not 12.
    Given::with(())
        .given(vec![scheduled(), old])
        .when(hold_cmd(2, 1, &["A1"], 5))
        .then_expect_events(vec![
            released(1, ReleaseReason::Replaced, 5),
            renewed(2, 1, &["A1"], 1000, 5, 0),
        ]);
    let written = serde_json::to_value(held(1, 1, &["A1"], 1000, 0)).unwrap();
    assert!(written["SeatsHeld"].get("row_started_at").is_none());
}
