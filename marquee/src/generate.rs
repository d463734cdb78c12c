//! `marquee generate-history`: a realistic event history for analysis and benchmarks.
//!
//! It drives the real aggregates (so every event is one the engine could have written) with
//! a seeded random mix of customers: theaters with several screens, movies, showtimes on a
//! schedule, holds that are paid (some after a declined card), released or left to expire,
//! and a few cancelled showtimes with their refunds. Events are appended in large batches.
//! The command-side lookup tables are not filled, so use the result for history, export and
//! replay, not for booking.

use anyhow::bail;
use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::Aggregate;
use indicatif::ProgressBar;
use marquee_domain::movie::{Movie, MovieCommand, MovieDetails};
use marquee_domain::showtime::*;
use marquee_domain::theater::{Location, Screen, Slot, Theater, TheaterCommand, TheaterDetails};
use marquee_domain::*;
use marquee_event_store::append::{insert, to_new_events, NewEvent};
use marquee_event_store::metadata::{Actor, Metadata};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

const THEATERS: usize = 40;
const SCREENS: usize = 4;
const MOVIES: usize = 60;
const CUSTOMERS: usize = 20_000;
/// Rows appended per statement.
const FLUSH: usize = 5_000;

/// A 12 row by 18 seat screen with an aisle, premium rows at the back.
fn layout() -> Vec<String> {
    (0..12)
        .map(|r| {
            let k = if r >= 9 { "p" } else { "s" };
            format!("{}.{}", k.repeat(9), k.repeat(9))
        })
        .collect()
}

struct Out<'a> {
    pool: &'a PgPool,
    rows: Vec<NewEvent>,
    written: u64,
    progress: &'a ProgressBar,
}

impl<'a> Out<'a> {
    fn new(pool: &'a PgPool, progress: &'a ProgressBar) -> Self {
        Self {
            pool,
            rows: Vec::new(),
            written: 0,
            progress,
        }
    }

    /// Rows written so far and waiting to be.
    fn appended(&self) -> u64 {
        self.written + self.rows.len() as u64
    }

    async fn push(&mut self, rows: Vec<NewEvent>) -> anyhow::Result<()> {
        self.rows.extend(rows);
        if self.rows.len() >= FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        insert(&mut tx, &self.rows).await?;
        tx.commit().await?;
        self.written += self.rows.len() as u64;
        self.progress.set_position(self.written);
        self.rows.clear();
        Ok(())
    }
}

/// One aggregate being written: its state and last sequence.
struct Stream<A: Aggregate> {
    id: String,
    state: A,
    version: usize,
}

impl<A: Aggregate> Stream<A> {
    fn new(id: impl ToString) -> Self {
        Self {
            id: id.to_string(),
            state: A::default(),
            version: 0,
        }
    }

    /// Records events (already decided) and returns their rows.
    fn record(&mut self, events: Vec<A::Event>, meta: &Metadata) -> Vec<NewEvent> {
        let rows = to_new_events::<A>(&self.id, self.version, &events, meta);
        self.version += events.len();
        for e in events {
            self.state.apply(e);
        }
        rows
    }
}

fn user(rng: &mut StdRng, customers: &[UserId]) -> UserId {
    customers[rng.gen_range(0..customers.len())]
}

fn meta_for(actor: Actor, command: &'static str) -> Metadata {
    Metadata::engine(actor).named(command)
}

/// Appends about `target` events to an empty events table; returns how many it wrote.
pub async fn generate(
    pool: &PgPool,
    target: u64,
    seed: u64,
    progress: &ProgressBar,
) -> anyhow::Result<u64> {
    ensure_empty(pool).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Out::new(pool, progress);
    let now = Utc::now();
    let customers: Vec<UserId> = (0..CUSTOMERS)
        .map(|i| UserId(Uuid::from_u128(0xC000_0000 + i as u128)))
        .collect();
    let mut theaters = add_theaters(&mut out).await?;
    let movies = add_movies(&mut out).await?;
    let mut index = 0usize;
    while out.appended() < target {
        let theater = &mut theaters[index % THEATERS];
        let movie = &movies[rng.gen_range(0..MOVIES)];
        let slot = next_slot(theater, movie, index, now);
        let booked = theater
            .state
            .decide(TheaterCommand::BookSlot(slot.clone()))?;
        out.push(theater.record(booked, &meta_for(Actor::System, "ScheduleShowtime")))
            .await?;
        let theater_id = theater.state.id.expect("added");
        let rows = showtime(&mut rng, theater_id, &slot, movie, &customers)?;
        out.push(rows).await?;
        index += 1;
    }
    out.flush().await?;
    Ok(out.written)
}

/// Refuses a database that already holds events.
async fn ensure_empty(pool: &PgPool) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await?;
    if existing > 0 {
        bail!("the database already holds {existing} events; generate into an empty one (set DATABASE_URL)");
    }
    Ok(())
}

/// Adds the theaters, each with its screens.
async fn add_theaters(out: &mut Out<'_>) -> anyhow::Result<Vec<Stream<Theater>>> {
    let mut theaters = Vec::new();
    for t in 0..THEATERS {
        let mut s = Stream::<Theater>::new(TheaterId(Uuid::now_v7()));
        let screens = (0..SCREENS)
            .map(|n| Screen {
                id: ScreenId(Uuid::now_v7()),
                name: format!("Screen {}", n + 1),
                layout: layout(),
            })
            .collect();
        let id = TheaterId(s.id.parse()?);
        let e = s.state.decide(TheaterCommand::Add {
            id,
            details: theater_details(t),
            screens,
        })?;
        out.push(s.record(e, &meta_for(Actor::System, "AddTheater")))
            .await?;
        theaters.push(s);
    }
    Ok(theaters)
}

/// The `t`th theater's name and place.
fn theater_details(t: usize) -> TheaterDetails {
    TheaterDetails {
        name: format!("Cinema {t}"),
        address: format!("{} Main St", t + 1),
        city: format!("City {}", t % 12),
        location: Location::new(40.0 + (t as f64) * 0.05, -74.0 - (t as f64) * 0.03)
            .expect("in range"),
        timezone: "America/New_York".into(),
    }
}

/// Adds the movies.
async fn add_movies(out: &mut Out<'_>) -> anyhow::Result<Vec<Stream<Movie>>> {
    let mut movies = Vec::new();
    for m in 0..MOVIES {
        let mut s = Stream::<Movie>::new(MovieId(Uuid::now_v7()));
        let id = MovieId(s.id.parse()?);
        let e = s.state.decide(MovieCommand::Add {
            id,
            details: movie_details(m),
        })?;
        out.push(s.record(e, &meta_for(Actor::System, "AddMovie")))
            .await?;
        movies.push(s);
    }
    Ok(movies)
}

/// The `m`th movie's details.
fn movie_details(m: usize) -> MovieDetails {
    MovieDetails {
        title: format!("Feature {m}"),
        runtime_minutes: 90 + (m as u32 * 7) % 80,
        rating: Some(["G", "PG", "PG-13", "R"][m % 4].into()),
        genres: vec![["drama", "comedy", "action", "crime", "animation"][m % 5].into()],
        language: Some("en".into()),
        release_date: None,
        synopsis: None,
        poster_url: None,
        trailer_url: None,
    }
}

/// The movie's runtime, two hours if it has no details.
fn runtime_minutes(movie: &Stream<Movie>) -> u32 {
    movie
        .state
        .details
        .as_ref()
        .map_or(120, |d| d.runtime_minutes)
}

/// The `index`th showtime's place on the theater's screens, for a new showtime of `movie`.
fn next_slot(
    theater: &Stream<Theater>,
    movie: &Stream<Movie>,
    index: usize,
    now: DateTime<Utc>,
) -> Slot {
    let screen_id = theater.state.screens[(index / THEATERS) % SCREENS].id;
    // Each screen shows one film every four hours from a month from now on.
    let starts_at =
        now + TimeDelta::days(30) + TimeDelta::hours(4 * (index / (THEATERS * SCREENS)) as i64);
    Slot {
        showtime_id: ShowtimeId(Uuid::now_v7()),
        screen_id,
        starts_at,
        busy_until: starts_at + TimeDelta::minutes(i64::from(runtime_minutes(movie)) + 15),
    }
}

/// One showtime's whole life: scheduled, customers come and go, perhaps cancelled.
fn showtime(
    rng: &mut StdRng,
    theater_id: TheaterId,
    slot: &Slot,
    movie: &Stream<Movie>,
    customers: &[UserId],
) -> anyhow::Result<Vec<NewEvent>> {
    let mut s = Stream::<Showtime>::new(slot.showtime_id);
    let mut clock = slot.starts_at - TimeDelta::days(10);
    let schedule = ShowtimeCommand::Schedule(Schedule {
        id: slot.showtime_id,
        details: showtime_details(theater_id, slot, movie)?,
        now: clock,
    });
    let mut rows = s.record(
        s.state.decide(schedule)?,
        &meta_for(Actor::System, "ScheduleShowtime"),
    );
    let seats: Vec<SeatLabel> = s.state.layout().seats().map(|x| x.label.clone()).collect();
    for _ in 0..rng.gen_range(100..160) {
        clock += TimeDelta::seconds(rng.gen_range(5..600));
        rows.extend(visit(rng, &mut s, &seats, customers, &mut clock)?);
    }
    if rng.gen_bool(0.02) {
        let events = s
            .state
            .decide(ShowtimeCommand::Cancel(Cancel { now: clock }))?;
        rows.extend(s.record(events, &meta_for(Actor::System, "CancelShowtime")));
    }
    Ok(rows)
}

/// A showtime of `movie` in `slot`, at the generated prices.
fn showtime_details(
    theater_id: TheaterId,
    slot: &Slot,
    movie: &Stream<Movie>,
) -> anyhow::Result<ShowtimeDetails> {
    Ok(ShowtimeDetails {
        movie_id: movie.state.id.expect("added"),
        theater_id,
        screen_id: slot.screen_id,
        starts_at: slot.starts_at,
        ends_at: slot.starts_at + TimeDelta::minutes(i64::from(runtime_minutes(movie))),
        format: None,
        layout: layout(),
        prices: [
            (
                SeatKind::Standard,
                Money::new(1250, Currency::parse("USD")?)?,
            ),
            (
                SeatKind::Premium,
                Money::new(1800, Currency::parse("USD")?)?,
            ),
        ]
        .into(),
    })
}

/// One customer's visit at `clock`: a hold on up to four seats side by side and what follows
/// it (nothing if a seat is taken).
fn visit(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    seats: &[SeatLabel],
    customers: &[UserId],
    clock: &mut DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let customer = user(rng, customers);
    let want = rng.gen_range(1..=4);
    let start = rng.gen_range(0..seats.len());
    let chosen: Vec<SeatLabel> = seats
        .iter()
        .cycle()
        .skip(start)
        .take(want)
        .cloned()
        .collect();
    let reservation = ReservationId(Uuid::now_v7());
    let hold = ShowtimeCommand::HoldSeats(HoldSeats {
        reservation_id: reservation,
        customer_id: customer,
        seats: chosen,
        hold_for: TimeDelta::minutes(7),
        // No cooldown: generated customers keep the freedom they had before it existed.
        cooldown: TimeDelta::zero(),
        now: *clock,
    });
    let Ok(events) = s.state.decide(hold) else {
        return Ok(Vec::new());
    };
    let mut rows = s.record(events, &meta_for(Actor::User(customer), "HoldSeats"));
    rows.extend(after_hold(rng, s, reservation, customer, clock)?);
    Ok(rows)
}

/// What a customer does after holding: pay (sometimes after a decline), let go, or forget.
fn after_hold(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    clock: &mut DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let roll: f64 = rng.gen();
    if roll < 0.6 {
        pay(rng, s, reservation, customer, clock)
    } else if roll < 0.75 {
        *clock += TimeDelta::seconds(rng.gen_range(10..200));
        release(s, reservation, customer, *clock)
    } else {
        // Forgotten: the timer records the expiry a little after it.
        let expire_at = *clock + TimeDelta::minutes(7) + TimeDelta::seconds(1);
        Ok(expire(s, reservation, expire_at))
    }
}

/// Pays for the hold, about one time in seven only after a first card is declined. Stops
/// early if a payment cannot start.
fn pay(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    clock: &mut DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let mut rows = Vec::new();
    let mut attempts = if rng.gen_bool(0.15) { 2 } else { 1 };
    while attempts > 0 {
        attempts -= 1;
        *clock += TimeDelta::seconds(rng.gen_range(20..120));
        let payment = PaymentId(Uuid::now_v7());
        let start = start_payment(reservation, customer, payment, *clock);
        let Ok(events) = s.state.decide(start) else {
            break;
        };
        rows.extend(s.record(events, &meta_for(Actor::User(customer), "StartPayment")));
        *clock += TimeDelta::seconds(2);
        rows.extend(if attempts > 0 {
            decline_payment(s, reservation, customer, payment, *clock)?
        } else {
            confirm_payment(rng, s, reservation, customer, payment, *clock)?
        });
    }
    Ok(rows)
}

/// The command that starts paying for the hold.
fn start_payment(
    reservation: ReservationId,
    customer: UserId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> ShowtimeCommand {
    ShowtimeCommand::StartPayment(StartPayment {
        reservation_id: reservation,
        customer_id: customer,
        payment_id: payment,
        pin_for: TimeDelta::minutes(10),
        now,
    })
}

/// The card is declined, and may be tried again.
fn decline_payment(
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let fail = ShowtimeCommand::FailPayment(FailPayment {
        reservation_id: reservation,
        payment_id: payment,
        reason: "card_declined".into(),
        retryable: true,
        now,
    });
    let meta = meta_for(Actor::User(customer), "FailPayment");
    Ok(s.record(s.state.decide(fail)?, &meta))
}

/// The payment goes through: a ticket for each held seat.
fn confirm_payment(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let seats = s.state.holds.get(&reservation).map_or(0, |h| h.seats.len());
    let confirm = ShowtimeCommand::ConfirmPayment(ConfirmPayment {
        reservation_id: reservation,
        payment_id: payment,
        tickets: (0..seats)
            .map(|_| NewTicket {
                id: TicketId(Uuid::now_v7()),
                code: format!("G{:08X}", rng.gen::<u32>()),
            })
            .collect(),
        now,
    });
    let meta = meta_for(Actor::User(customer), "ConfirmPayment");
    Ok(s.record(s.state.decide(confirm)?, &meta))
}

/// The customer lets go of the hold.
fn release(
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let release = ShowtimeCommand::ReleaseHold(ReleaseHold {
        reservation_id: reservation,
        customer_id: customer,
        now,
    });
    let meta = meta_for(Actor::User(customer), "ReleaseHold");
    Ok(s.record(s.state.decide(release)?, &meta))
}

/// The timer expires the hold at `now`; nothing if it is no longer open.
fn expire(
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let expire = ShowtimeCommand::ExpireHold(ExpireHold {
        reservation_id: reservation,
        now,
    });
    match s.state.decide(expire) {
        Ok(events) => s.record(events, &meta_for(Actor::Timer, "ExpireHold")),
        Err(_) => Vec::new(),
    }
}

/// Fills an empty events table with one popular showtime under churn, about `target` events:
/// customers holding one or two of its 500 seats and mostly letting go (as in the
/// hot-showtime benchmark), a few paying. For measuring what a showtime's state costs as its
/// history grows. Returns the showtime and how many events were written.
pub async fn churn_showtime(
    pool: &PgPool,
    target: u64,
    seed: u64,
) -> anyhow::Result<(ShowtimeId, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let progress = ProgressBar::hidden();
    let mut out = Out::new(pool, &progress);
    let id = ShowtimeId(Uuid::now_v7());
    let mut s = Stream::<Showtime>::new(id);
    let mut clock = Utc::now();
    let details = ShowtimeDetails {
        movie_id: MovieId(Uuid::now_v7()),
        theater_id: TheaterId(Uuid::now_v7()),
        screen_id: ScreenId(Uuid::now_v7()),
        // Far enough ahead that a million events of churn a second apart stay before it.
        starts_at: clock + TimeDelta::days(60),
        ends_at: clock + TimeDelta::days(60) + TimeDelta::hours(2),
        format: None,
        layout: (0..20).map(|_| "s".repeat(25)).collect(),
        prices: [(
            SeatKind::Standard,
            Money::new(1250, Currency::parse("USD")?)?,
        )]
        .into(),
    };
    let schedule = ShowtimeCommand::Schedule(Schedule {
        id,
        details,
        now: clock,
    });
    let rows = s.record(
        s.state.decide(schedule)?,
        &meta_for(Actor::System, "ScheduleShowtime"),
    );
    out.push(rows).await?;
    let seats: Vec<SeatLabel> = s.state.layout().seats().map(|x| x.label.clone()).collect();
    let customers: Vec<UserId> = (0..CUSTOMERS).map(|_| UserId(Uuid::now_v7())).collect();
    // The holds walked away from, by deadline: the timer records each expiry a second after.
    let mut forgotten = std::collections::VecDeque::new();
    while out.appended() < target {
        clock += TimeDelta::milliseconds(rng.gen_range(200..2_000));
        let rows = expire_forgotten(&mut s, &mut forgotten, clock)?;
        out.push(rows).await?;
        let rows = churn_once(&mut rng, &mut s, &seats, &customers, clock, &mut forgotten)?;
        out.push(rows).await?;
    }
    out.flush().await?;
    Ok((id, out.written))
}

/// The timer's work on the churning showtime: the expiries of the forgotten holds whose
/// deadline is over a second past at `clock` (those replaced meanwhile record nothing).
fn expire_forgotten(
    s: &mut Stream<Showtime>,
    forgotten: &mut std::collections::VecDeque<(DateTime<Utc>, ReservationId)>,
    clock: DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let mut rows = Vec::new();
    while let Some(&(deadline, reservation)) = forgotten.front() {
        let due = deadline + TimeDelta::seconds(1);
        if due > clock {
            break;
        }
        forgotten.pop_front();
        rows.extend(expire(s, reservation, due));
    }
    Ok(rows)
}

/// One customer's hold on the churning showtime and what follows it.
fn churn_once(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    seats: &[SeatLabel],
    customers: &[UserId],
    clock: DateTime<Utc>,
    forgotten: &mut std::collections::VecDeque<(DateTime<Utc>, ReservationId)>,
) -> anyhow::Result<Vec<NewEvent>> {
    let customer = user(rng, customers);
    let chosen: Vec<SeatLabel> = (0..rng.gen_range(1..=2))
        .map(|_| seats[rng.gen_range(0..seats.len())].clone())
        .collect();
    let reservation = ReservationId(Uuid::now_v7());
    let hold = ShowtimeCommand::HoldSeats(HoldSeats {
        reservation_id: reservation,
        customer_id: customer,
        seats: chosen,
        hold_for: TimeDelta::minutes(7),
        cooldown: TimeDelta::zero(),
        now: clock,
    });
    let Ok(events) = s.state.decide(hold) else {
        return Ok(Vec::new()); // a seat taken, or asked for twice: the customer moves on
    };
    let actor = Actor::User(customer);
    let deadline = events.iter().find_map(|e| match e {
        ShowtimeEvent::SeatsHeld(h) => Some(h.expires_at),
        _ => None,
    });
    let mut rows = s.record(events, &meta_for(actor, "HoldSeats"));
    let roll: f64 = rng.gen();
    // A few pay while seats remain; most let go at once; the rest walk away and their hold
    // runs out (or gives way to their next one).
    if roll < 0.001 && s.state.tickets.len() < 250 {
        rows.extend(pay_at_once(rng, s, reservation, customer, clock)?);
    } else if roll < 0.75 {
        rows.extend(release(s, reservation, customer, clock)?);
    } else if let Some(deadline) = deadline {
        forgotten.push_back((deadline, reservation));
    }
    Ok(rows)
}

/// A customer who pays for the hold at once.
fn pay_at_once(
    rng: &mut StdRng,
    s: &mut Stream<Showtime>,
    reservation: ReservationId,
    customer: UserId,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<NewEvent>> {
    let payment = PaymentId(Uuid::now_v7());
    let start = start_payment(reservation, customer, payment, now);
    let meta = meta_for(Actor::User(customer), "StartPayment");
    let mut rows = s.record(s.state.decide(start)?, &meta);
    rows.extend(confirm_payment(
        rng,
        s,
        reservation,
        customer,
        payment,
        now,
    )?);
    Ok(rows)
}
