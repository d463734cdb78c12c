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

/// The command for `op`. Reservation ids are fresh, as the engine's are: a hold in slot `r`
/// gets a new id, and the other commands name the latest hold placed in their slot.
fn command(op: &Op, minute: i64, n: usize, slots: &mut [ReservationId; 12]) -> ShowtimeCommand {
    let now = t(minute);
    let pid = |p: u8| PaymentId(Uuid::from_u128(0x2000 + p as u128));
    match op.clone() {
        Op::Hold { r, u, seats } => ShowtimeCommand::HoldSeats(HoldSeats {
            reservation_id: {
                slots[r as usize] = res(1000 + n as u128);
                slots[r as usize]
            },
            customer_id: user(u as u128),
            seats: seats
                .into_iter()
                .map(|i| SeatLabel::parse(SEATS[i]).unwrap())
                .collect(),
            hold_for: TimeDelta::minutes(7),
            cooldown: TimeDelta::minutes(5),
            now,
        }),
        Op::Release { r, u } => ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: slots[r as usize],
            customer_id: user(u as u128),
            now,
        }),
        Op::Expire { r } => ShowtimeCommand::ExpireHold(ExpireHold {
            reservation_id: slots[r as usize],
            now,
        }),
        Op::Start { r, u, p, pin } => ShowtimeCommand::StartPayment(StartPayment {
            reservation_id: slots[r as usize],
            customer_id: user(u as u128),
            payment_id: pid(p),
            pin_for: TimeDelta::minutes(pin),
            now,
        }),
        Op::Confirm { r, p } => ShowtimeCommand::ConfirmPayment(ConfirmPayment {
            reservation_id: slots[r as usize],
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
            reservation_id: slots[r as usize],
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
        let mut log = Vec::new();
        let mut slots: [ReservationId; 12] = std::array::from_fn(|r| res(r as u128));
        let mut minute = 0;
        for (n, (op, jump)) in steps.iter().enumerate() {
            // Mostly forward in time, sometimes a little back (clock skew between callers).
            minute = if jump % 9 == 0 { minute - jump % 3 } else { minute + jump % 4 };
            let cmd = fit_tickets(&state, command(op, minute, n, &mut slots));
            if let Ok(events) = state.decide(cmd) {
                for e in events {
                    auditor.observe(&e);
                    log.push(e.clone());
                    state.apply(e);
                }
            }
            prop_assert!(auditor.violations.is_empty(), "{:?}", auditor.violations);
            check_state(&state)?;
            check_kept_holds(&state, &log)?;
        }
    }
}

/// The showtime keeps exactly the holds that are open or paid, each as its own events tell
/// it ([`Hold::replay`]); every hold it dropped was released or ran out.
fn check_kept_holds(state: &Showtime, log: &[ShowtimeEvent]) -> Result<(), TestCaseError> {
    let placed = log.iter().filter_map(|e| match e {
        ShowtimeEvent::SeatsHeld(h) => Some(h.reservation_id),
        _ => None,
    });
    for r in placed {
        let own = log
            .iter()
            .filter(|e| e.reservation_id() == Some(r))
            .cloned();
        let replayed = Hold::replay(own).expect("a placed hold replays");
        match state.holds.get(&r) {
            Some(kept) => {
                prop_assert!(!kept.is_dropped(), "kept a closed hold {kept:?}");
                prop_assert_eq!(kept, &replayed);
            }
            None => prop_assert!(replayed.is_dropped(), "dropped an open hold {replayed:?}"),
        }
    }
    Ok(())
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

/// What one customer does in [`holding_again_never_extends_a_row_past_its_window`].
#[derive(Clone, Debug)]
enum Step {
    Hold(Vec<usize>),
    /// Lets go of their latest hold.
    Release,
    /// The timer records their latest hold's expiry (refused while it is live).
    Expire,
    /// Someone else holds seats, so some of theirs may be taken.
    Other(Vec<usize>),
}

fn step() -> impl Strategy<Value = Step> {
    let seats = || proptest::collection::vec(0usize..SEATS.len(), 1..4);
    prop_oneof![
        6 => seats().prop_map(Step::Hold),
        2 => Just(Step::Release),
        1 => Just(Step::Expire),
        1 => seats().prop_map(Step::Other),
    ]
}

/// The times one customer kept seats: `[held_at, end)` per hold, in the order placed.
#[derive(Default)]
struct Kept(Vec<(ReservationId, DateTime<Utc>, DateTime<Utc>)>);

impl Kept {
    fn observe(&mut self, e: &ShowtimeEvent) {
        let (id, at) = match e {
            ShowtimeEvent::SeatsHeld(h) if h.customer_id == user(1) => {
                self.0.push((h.reservation_id, h.held_at, h.expires_at));
                return;
            }
            ShowtimeEvent::HoldReleased {
                reservation_id,
                released_at,
                ..
            } => (reservation_id, released_at),
            ShowtimeEvent::HoldExpired {
                reservation_id,
                expired_at,
                ..
            } => (reservation_id, expired_at),
            _ => return,
        };
        if let Some(kept) = self.0.iter_mut().find(|k| k.0 == *id) {
            kept.2 = kept.2.min(*at);
        }
    }

    /// Holds joined into stretches wherever the customer let go for less than `cooldown`:
    /// (start, end) of each.
    fn stretches(&self, cooldown: TimeDelta) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for &(_, start, end) in &self.0 {
            match out.last_mut() {
                Some(last) if start < last.1 + cooldown => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever one customer does, at increasing times, they never keep seats for longer than
    /// `hold_for` without letting go for at least `cooldown`; a hold that starts a new row
    /// comes at least `cooldown` after their last one ended; and a refusal's `retry_at` is
    /// kept: holding at that instant is not refused for the cooldown again.
    #[test]
    fn holding_again_never_extends_a_row_past_its_window(
        hold_secs in 60i64..600,
        cooldown_secs in 0i64..400,
        steps in proptest::collection::vec((step(), 0i64..180), 1..60)
    ) {
        let hold_for = TimeDelta::seconds(hold_secs);
        let cooldown = TimeDelta::seconds(cooldown_secs);
        let mut state = Showtime::default();
        state.apply(scheduled());
        let mut kept = Kept::default();
        let mut now = t(0);
        let mut latest = None;
        for (n, (step, pause)) in steps.into_iter().enumerate() {
            now += TimeDelta::seconds(pause);
            let r = res(100 + n as u128);
            let hold = |u, seats: Vec<usize>, at| ShowtimeCommand::HoldSeats(HoldSeats {
                reservation_id: r,
                customer_id: user(u),
                seats: seats.into_iter().map(|i| SeatLabel::parse(SEATS[i]).unwrap()).collect(),
                hold_for,
                cooldown,
                now: at,
            });
            let cmd = match step {
                Step::Hold(seats) => {
                    latest = Some(r);
                    hold(1, seats, now)
                }
                Step::Other(seats) => hold(2, seats, now),
                Step::Release => ShowtimeCommand::ReleaseHold(ReleaseHold {
                    reservation_id: latest.unwrap_or(r),
                    customer_id: user(1),
                    now,
                }),
                Step::Expire => ShowtimeCommand::ExpireHold(ExpireHold {
                    reservation_id: latest.unwrap_or(r),
                    now,
                }),
            };
            let events = match state.decide(cmd.clone()) {
                Ok(events) => events,
                Err(ShowtimeError::HoldCooldown { retry_at }) => {
                    prop_assert!(retry_at > now);
                    let ShowtimeCommand::HoldSeats(c) = cmd else { unreachable!() };
                    let again = state.decide(ShowtimeCommand::HoldSeats(HoldSeats {
                        now: retry_at,
                        ..c
                    }));
                    prop_assert!(
                        !matches!(again, Err(ShowtimeError::HoldCooldown { .. })),
                        "refused again at its retry_at: {again:?}"
                    );
                    continue;
                }
                Err(_) => continue,
            };
            for e in events {
                if let ShowtimeEvent::SeatsHeld(h) = &e {
                    if let (None, Some(&(_, _, ended))) = (h.row_started_at, kept.0.last()) {
                        if h.customer_id == user(1) {
                            prop_assert!(
                                h.held_at >= ended + cooldown,
                                "a new row at {} only {} after the last hold ended",
                                h.held_at, h.held_at - ended
                            );
                        }
                    }
                }
                kept.observe(&e);
                state.apply(e);
            }
            for (start, end) in kept.stretches(cooldown) {
                prop_assert!(
                    end - start <= hold_for,
                    "seats kept from {start} to {end} with pauses under {cooldown}"
                );
            }
        }
    }
}
