//! Property tests: random command sequences at random (even out-of-order) times never break
//! the booking invariants, as judged by the independent [`crate::audit::Auditor`].

use super::tests::{details, res, scheduled, t, user};
use super::*;
use crate::audit::Auditor;
use chrono::TimeDelta;
use proptest::prelude::*;
use uuid::Uuid;

const SEATS: [&str; 8] = ["A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4"];

#[derive(Clone, Debug)]
enum Op {
    Hold { r: u8, u: u8, seats: Vec<usize> },
    Release { r: u8, u: u8 },
    Expire { r: u8 },
    Start { r: u8, u: u8, p: u8, pin: i64 },
    Confirm { r: u8, p: u8 },
    Fail { r: u8, p: u8 },
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0u8..12;
    let u = 0u8..4;
    let p = 0u8..12;
    prop_oneof![
        6 => (r.clone(), u.clone(), proptest::collection::vec(0usize..SEATS.len(), 0..4))
            .prop_map(|(r, u, seats)| Op::Hold { r, u, seats }),
        2 => (r.clone(), u.clone()).prop_map(|(r, u)| Op::Release { r, u }),
        2 => r.clone().prop_map(|r| Op::Expire { r }),
        3 => (r.clone(), u.clone(), p.clone(), 1i64..15)
            .prop_map(|(r, u, p, pin)| Op::Start { r, u, p, pin }),
        3 => (r.clone(), p.clone()).prop_map(|(r, p)| Op::Confirm { r, p }),
        2 => (r, p).prop_map(|(r, p)| Op::Fail { r, p }),
        1 => Just(Op::Cancel),
    ]
}

fn command(op: &Op, minute: i64, n: usize) -> ShowtimeCommand {
    let now = t(minute);
    let pid = |p: u8| PaymentId(Uuid::from_u128(0x2000 + p as u128));
    match op.clone() {
        Op::Hold { r, u, seats } => ShowtimeCommand::HoldSeats(HoldSeats {
            reservation_id: res(r as u128),
            customer_id: user(u as u128),
            seats: seats
                .into_iter()
                .map(|i| SeatLabel::parse(SEATS[i]).unwrap())
                .collect(),
            hold_for: TimeDelta::minutes(7),
            now,
        }),
        Op::Release { r, u } => ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: res(r as u128),
            customer_id: user(u as u128),
            now,
        }),
        Op::Expire { r } => ShowtimeCommand::ExpireHold(ExpireHold {
            reservation_id: res(r as u128),
            now,
        }),
        Op::Start { r, u, p, pin } => ShowtimeCommand::StartPayment(StartPayment {
            reservation_id: res(r as u128),
            customer_id: user(u as u128),
            payment_id: pid(p),
            pin_for: TimeDelta::minutes(pin),
            now,
        }),
        Op::Confirm { r, p } => ShowtimeCommand::ConfirmPayment(ConfirmPayment {
            reservation_id: res(r as u128),
            payment_id: pid(p),
            tickets: (0..10)
                .map(|i| NewTicket {
                    id: TicketId(Uuid::from_u128(((n as u128) << 8) | i)),
                    code: format!("C{n}-{i}"),
                })
                .collect(),
            now,
        }),
        Op::Fail { r, p } => ShowtimeCommand::FailPayment(FailPayment {
            reservation_id: res(r as u128),
            payment_id: pid(p),
            reason: "card_declined".into(),
            retryable: true,
            now,
        }),
        Op::Cancel => ShowtimeCommand::Cancel(Cancel { now }),
    }
}

/// Confirm takes one ticket per seat; trim the spare ids to the hold's size.
fn fit_tickets(state: &Showtime, mut cmd: ShowtimeCommand) -> ShowtimeCommand {
    if let ShowtimeCommand::ConfirmPayment(c) = &mut cmd {
        if let Some(h) = state.holds.get(&c.reservation_id) {
            c.tickets.truncate(h.seats.len());
        }
    }
    cmd
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_commands_never_break_the_booking_invariants(
        steps in proptest::collection::vec((op(), 0i64..110), 1..80)
    ) {
        let mut state = Showtime::default();
        let mut auditor = Auditor::default();
        let first = scheduled();
        auditor.observe(&first);
        state.apply(first);
        let mut minute = 0;
        for (n, (op, jump)) in steps.iter().enumerate() {
            // Mostly forward in time, sometimes a little back (clock skew between callers).
            minute = if jump % 9 == 0 { minute - jump % 3 } else { minute + jump % 4 };
            let cmd = fit_tickets(&state, command(op, minute, n));
            if let Ok(events) = state.decide(cmd) {
                for e in events {
                    auditor.observe(&e);
                    state.apply(e);
                }
            }
            prop_assert!(auditor.violations.is_empty(), "{:?}", auditor.violations);
            check_state(&state)?;
        }
    }
}

/// The aggregate's own view agrees: each sold seat has exactly one valid ticket, and no seat
/// is in two live holds at the aggregate's clock.
fn check_state(state: &Showtime) -> Result<(), TestCaseError> {
    let now = state.clock.expect("scheduled");
    for s in SEATS {
        let label = SeatLabel::parse(s).unwrap();
        let valid = state
            .tickets
            .values()
            .filter(|t| t.seat == label && t.status == TicketStatus::Valid)
            .count();
        prop_assert!(valid <= 1, "seat {s} has {valid} valid tickets");
        let live = state
            .holds
            .values()
            .filter(|h| h.is_live(now) && h.seats.contains(&label))
            .count();
        prop_assert!(live <= 1, "seat {s} is in {live} live holds");
        prop_assert!(!(live == 1 && valid == 1), "seat {s} is held and sold");
        let sold = matches!(state.seat_state(&label, now), SeatState::Sold(_));
        prop_assert_eq!(sold, valid == 1);
    }
    let _ = details();
    Ok(())
}
