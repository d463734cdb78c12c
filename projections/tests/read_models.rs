//! The read models against a real Postgres: rebuilt twice or applied twice they give the same
//! rows; gaps are filled from the log; search uses its index.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use marquee_domain::movie::{Movie, MovieCommand, MovieDetails};
use marquee_domain::showtime::*;
use marquee_domain::theater::{Location, Screen, Slot, Theater, TheaterCommand, TheaterDetails};
use marquee_domain::*;
use marquee_event_store::envelope::{Envelope, COLUMNS};
use marquee_projections::rebuild::{differences, prepare, rebuild_into};
use marquee_projections::theaters::{search_query, Near};
use marquee_projections::tracking::{apply_batch, apply_tracked};
use marquee_projections::{all, seat_maps};
use marquee_test_support::{append, event, fresh_database};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// Appends domain events to the events table, numbering each aggregate's sequence.
struct Log {
    pool: PgPool,
    sequences: HashMap<String, i64>,
}

impl Log {
    async fn append<A: Aggregate>(
        &mut self,
        id: impl ToString,
        aggregate: &mut A,
        events: Vec<A::Event>,
    ) {
        let id = id.to_string();
        let sequence = self.sequences.entry(id.clone()).or_default();
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                *sequence += 1;
                let payload = serde_json::to_value(e).unwrap();
                event(
                    A::TYPE,
                    &id,
                    *sequence,
                    &e.event_type(),
                    &e.event_version(),
                    payload,
                )
            })
            .collect();
        append(&self.pool, &rows).await;
        for e in events {
            aggregate.apply(e);
        }
    }
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}
fn seats(list: &[&str]) -> Vec<SeatLabel> {
    list.iter().map(|s| SeatLabel::parse(s).unwrap()).collect()
}

struct Scenario {
    showtime: ShowtimeId,
    holder: UserId,
    buyer: UserId,
    now: DateTime<Utc>,
}

/// A theater, a movie, two showtimes (one cancelled after a sale), holds that expired, one
/// that is live, a declined then a successful payment.
async fn history(pool: &PgPool) -> Scenario {
    let mut log = Log {
        pool: pool.clone(),
        sequences: HashMap::new(),
    };
    let now = Utc::now();
    let (theater_id, screen_id) = (TheaterId(Uuid::now_v7()), ScreenId(Uuid::now_v7()));
    let mut theater = Theater::default();
    let added = theater
        .decide(TheaterCommand::Add {
            id: theater_id,
            details: TheaterDetails {
                name: "Roxy".into(),
                address: "12 Main St".into(),
                city: "Springfield".into(),
                location: Location::new(40.71, -74.0).unwrap(),
                timezone: "America/New_York".into(),
            },
            screens: vec![Screen {
                id: screen_id,
                name: "One".into(),
                layout: vec!["ss.ss".into(), "pppp".into()],
            }],
        })
        .unwrap();
    log.append(theater_id, &mut theater, added).await;
    let movie_id = MovieId(Uuid::now_v7());
    let mut movie = Movie::default();
    let details = MovieDetails {
        title: "Heat".into(),
        runtime_minutes: 170,
        rating: None,
        genres: vec!["crime".into()],
        language: None,
        release_date: None,
        synopsis: None,
        poster_url: None,
        trailer_url: None,
    };
    let added = movie
        .decide(MovieCommand::Add {
            id: movie_id,
            details,
        })
        .unwrap();
    log.append(movie_id, &mut movie, added).await;

    let (holder, buyer) = (UserId(Uuid::now_v7()), UserId(Uuid::now_v7()));
    let mut showtimes = Vec::new();
    for day in [1, 2] {
        let id = ShowtimeId(Uuid::now_v7());
        let starts_at = now + TimeDelta::days(day);
        let booked = theater
            .decide(TheaterCommand::BookSlot(Slot {
                showtime_id: id,
                screen_id,
                starts_at,
                busy_until: starts_at + TimeDelta::hours(3),
            }))
            .unwrap();
        log.append(theater_id, &mut theater, booked).await;
        let mut showtime = Showtime::default();
        let details = ShowtimeDetails {
            movie_id,
            theater_id,
            screen_id,
            starts_at,
            ends_at: starts_at + TimeDelta::minutes(170),
            format: None,
            layout: vec!["ss.ss".into(), "pppp".into()],
            prices: [
                (SeatKind::Standard, usd(1000)),
                (SeatKind::Premium, usd(1500)),
            ]
            .into(),
        };
        let e = showtime
            .decide(ShowtimeCommand::Schedule(Schedule {
                id,
                details,
                now: now - TimeDelta::hours(1),
            }))
            .unwrap();
        log.append(id, &mut showtime, e).await;
        let steps = vec![
            // An hour ago: a hold that expired, recorded by the timer.
            hold(1, holder, &["A1", "A2"], now - TimeDelta::minutes(60)),
            ShowtimeCommand::ExpireHold(ExpireHold {
                reservation_id: res(1),
                now: now - TimeDelta::minutes(50),
            }),
            // Ten minutes ago: a hold that expired, not recorded yet.
            hold(2, holder, &["A3"], now - TimeDelta::minutes(10)),
            // The buyer: declined, then paid.
            hold(3, buyer, &["B1", "B2"], now - TimeDelta::minutes(2)),
            start(3, buyer, 1, now - TimeDelta::minutes(2)),
            ShowtimeCommand::FailPayment(FailPayment {
                reservation_id: res(3),
                payment_id: pay(1),
                reason: "card_declined".into(),
                retryable: true,
                now: now - TimeDelta::minutes(2),
            }),
            start(3, buyer, 2, now - TimeDelta::minutes(1)),
            ShowtimeCommand::ConfirmPayment(ConfirmPayment {
                reservation_id: res(3),
                payment_id: pay(2),
                tickets: vec![ticket(), ticket()],
                now: now - TimeDelta::minutes(1),
            }),
            // A live hold.
            hold(4, holder, &["A4"], now - TimeDelta::seconds(30)),
        ];
        for command in steps {
            let command = rekey(command, day);
            let e = showtime.decide(command).unwrap();
            log.append(id, &mut showtime, e).await;
        }
        showtimes.push((id, showtime));
    }
    let (cancelled, mut state) = showtimes.pop().unwrap();
    let e = state
        .decide(ShowtimeCommand::Cancel(Cancel { now }))
        .unwrap();
    log.append(cancelled, &mut state, e).await;
    Scenario {
        showtime: showtimes[0].0,
        holder,
        buyer,
        now,
    }
}

fn res(n: u128) -> ReservationId {
    ReservationId(Uuid::from_u128(n))
}
fn pay(n: u128) -> PaymentId {
    PaymentId(Uuid::from_u128(0x100 + n))
}
fn ticket() -> NewTicket {
    NewTicket {
        id: TicketId(Uuid::now_v7()),
        code: "CODE".into(),
    }
}
fn hold(r: u128, who: UserId, s: &[&str], now: DateTime<Utc>) -> ShowtimeCommand {
    ShowtimeCommand::HoldSeats(HoldSeats {
        reservation_id: res(r),
        customer_id: who,
        seats: seats(s),
        hold_for: TimeDelta::minutes(7),
        // None: the holder holds again minutes after an expiry, which a cooldown would refuse;
        // these tests are about the read models, not that rule.
        cooldown: TimeDelta::zero(),
        now,
    })
}
fn start(r: u128, who: UserId, p: u128, now: DateTime<Utc>) -> ShowtimeCommand {
    ShowtimeCommand::StartPayment(StartPayment {
        reservation_id: res(r),
        customer_id: who,
        payment_id: pay(p),
        pin_for: TimeDelta::minutes(10),
        now,
    })
}
/// Reservation and payment ids must differ between the two showtimes.
fn rekey(c: ShowtimeCommand, day: i64) -> ShowtimeCommand {
    let shift =
        |r: ReservationId| ReservationId(Uuid::from_u128(r.0.as_u128() + 1000 * day as u128));
    let shift_p = |p: PaymentId| PaymentId(Uuid::from_u128(p.0.as_u128() + 1000 * day as u128));
    match c {
        ShowtimeCommand::HoldSeats(mut h) => {
            h.reservation_id = shift(h.reservation_id);
            ShowtimeCommand::HoldSeats(h)
        }
        ShowtimeCommand::ExpireHold(mut h) => {
            h.reservation_id = shift(h.reservation_id);
            ShowtimeCommand::ExpireHold(h)
        }
        ShowtimeCommand::StartPayment(mut h) => {
            h.reservation_id = shift(h.reservation_id);
            h.payment_id = shift_p(h.payment_id);
            ShowtimeCommand::StartPayment(h)
        }
        ShowtimeCommand::FailPayment(mut h) => {
            h.reservation_id = shift(h.reservation_id);
            h.payment_id = shift_p(h.payment_id);
            ShowtimeCommand::FailPayment(h)
        }
        ShowtimeCommand::ConfirmPayment(mut h) => {
            h.reservation_id = shift(h.reservation_id);
            h.payment_id = shift_p(h.payment_id);
            ShowtimeCommand::ConfirmPayment(h)
        }
        other => other,
    }
}

async fn all_events(pool: &PgPool) -> Vec<Envelope> {
    sqlx::query_as(&format!("select {COLUMNS} from events order by position"))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn rows(pool: &PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {schema}.{table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_projection_rebuilt_twice_gives_the_same_rows() {
    let pool = fresh_database().await;
    history(&pool).await;
    for p in all() {
        let applied = rebuild_into(&pool, p.as_ref(), "rebuild_a").await.unwrap();
        assert!(applied > 0, "{} applied nothing", p.name());
        rebuild_into(&pool, p.as_ref(), "rebuild_b").await.unwrap();
        for table in p.tables() {
            assert!(
                rows(&pool, "rebuild_a", table).await > 0,
                "{table} is empty"
            );
            assert_eq!(
                differences(&pool, table, "rebuild_a", "rebuild_b")
                    .await
                    .unwrap(),
                0,
                "{table}"
            );
        }
    }
}

#[tokio::test]
async fn applying_every_event_twice_changes_nothing() {
    let pool = fresh_database().await;
    history(&pool).await;
    let events = all_events(&pool).await;
    for p in all() {
        rebuild_into(&pool, p.as_ref(), "applied_once")
            .await
            .unwrap();
        // Twice through the tracked path, and each event twice even without it.
        let mut tx = pool.begin().await.unwrap();
        prepare(&mut tx, p.as_ref(), "applied_twice").await.unwrap();
        for e in events
            .iter()
            .filter(|e| e.aggregate_type == p.aggregate_type())
        {
            p.apply(e, &mut tx).await.unwrap();
            p.apply(e, &mut tx).await.unwrap();
        }
        for e in events
            .iter()
            .filter(|e| e.aggregate_type == p.aggregate_type())
        {
            apply_tracked(p.as_ref(), e, &mut tx).await.unwrap();
            assert!(
                !apply_tracked(p.as_ref(), e, &mut tx).await.unwrap(),
                "a second delivery is skipped"
            );
        }
        tx.commit().await.unwrap();
        for table in p.tables() {
            assert_eq!(
                differences(&pool, table, "applied_once", "applied_twice")
                    .await
                    .unwrap(),
                0,
                "{}: {table}",
                p.name()
            );
        }
    }
}

#[tokio::test]
async fn an_event_after_a_gap_first_gets_the_missing_ones_from_the_log() {
    let pool = fresh_database().await;
    let scenario = history(&pool).await;
    let seat_maps = all().into_iter().find(|p| p.name() == "seat_maps").unwrap();
    let events: Vec<Envelope> = all_events(&pool)
        .await
        .into_iter()
        .filter(|e| e.aggregate_id == scenario.showtime.to_string())
        .collect();
    let mut tx = pool.begin().await.unwrap();
    // Deliver only the last event: everything before it must be read from the log.
    assert!(
        apply_tracked(seat_maps.as_ref(), events.last().unwrap(), &mut tx)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let map = seat_maps::get(
        &pool,
        scenario.showtime.0,
        scenario.now,
        Some(scenario.holder.0),
    )
    .await
    .unwrap()
    .unwrap();
    let status: HashMap<&str, (&str, bool)> = map
        .iter()
        .map(|s| (s.seat.as_str(), (s.status.as_str(), s.mine)))
        .collect();
    assert_eq!(status["A1"], ("available", false), "expired and recorded");
    assert_eq!(
        status["A3"],
        ("available", false),
        "expired, not recorded yet"
    );
    assert_eq!(status["B1"], ("sold", false));
    assert_eq!(status["A4"], ("held", true));
    let buyer_view = seat_maps::get(
        &pool,
        scenario.showtime.0,
        scenario.now,
        Some(scenario.buyer.0),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(buyer_view.iter().all(|s| !s.mine));
    // Seven minutes on, the live hold has run out too.
    let later = seat_maps::get(
        &pool,
        scenario.showtime.0,
        scenario.now + TimeDelta::minutes(7),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        later.iter().find(|s| s.seat == "A4").unwrap().status,
        "available"
    );
}

#[tokio::test]
async fn searching_near_a_point_uses_the_spatial_index_and_sorts_by_distance() {
    let pool = fresh_database().await;
    // A grid of theaters around New York, enough for the planner to prefer the index.
    sqlx::query(
        "insert into theaters_view (id, name, address, city, lat, lon, timezone, screens)
         select gen_random_uuid(), 'Cinema ' || i, 'Somewhere', 'City ' || (i % 50),
                40 + (i / 100) * 0.05, -75 + (i % 100) * 0.05, 'America/New_York', '[]'
         from generate_series(0, 4999) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("analyze theaters_view")
        .execute(&pool)
        .await
        .unwrap();
    let near = Near {
        lat: 40.5,
        lon: -74.5,
        radius_km: 10.0,
    };
    let plan: Vec<String> = search_query("explain", Some(near), None, 20)
        .build_query_scalar()
        .fetch_all(&pool)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("theaters_view_earth_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    let found = marquee_projections::theaters::search(&pool, Some(near), None, 20)
        .await
        .unwrap();
    assert!(!found.is_empty());
    let distances: Vec<f64> = found.iter().map(|t| t.distance_km.unwrap()).collect();
    assert!(
        distances.windows(2).all(|w| w[0] <= w[1]),
        "nearest first: {distances:?}"
    );
    assert!(distances.iter().all(|d| *d <= 10.0));
    let by_city = marquee_projections::theaters::search(&pool, None, Some("city 7"), 100)
        .await
        .unwrap();
    assert!(by_city
        .iter()
        .all(|t| t.city.to_lowercase().contains("city 7")));
    assert!(!by_city.is_empty());
}

#[tokio::test]
async fn the_bulk_rebuild_gives_the_same_rows_as_applying_event_by_event() {
    use marquee_projections::rebuild::bulk_rebuild_into;
    let pool = fresh_database().await;
    history(&pool).await;
    let projections = all();
    let chosen: Vec<&dyn marquee_projections::Projection> =
        projections.iter().map(|p| p.as_ref()).collect();
    let read = bulk_rebuild_into(&pool, &chosen, &|name| format!("bulk_{name}"), &|_| {})
        .await
        .unwrap();
    assert_eq!(read as usize, all_events(&pool).await.len());
    for p in &projections {
        let incremental = format!("incremental_{}", p.name());
        rebuild_into(&pool, p.as_ref(), &incremental).await.unwrap();
        let bulk = format!("bulk_{}", p.name());
        for table in p.tables().iter().chain(&["projection_progress"]) {
            assert!(
                rows(&pool, &bulk, table).await > 0,
                "{bulk}.{table} is empty"
            );
            assert_eq!(
                differences(&pool, table, &incremental, &bulk)
                    .await
                    .unwrap(),
                0,
                "{}: {table}",
                p.name()
            );
        }
    }
}

/// After the scenario, an on-sale's churn on its showtime: the holds from before closed,
/// then seats held, released and held again by one customer after another.
async fn churn(pool: &PgPool, scenario: &Scenario) {
    let id = scenario.showtime;
    let mut log = Log {
        pool: pool.clone(),
        sequences: HashMap::new(),
    };
    let mut showtime = Showtime::default();
    for e in all_events(pool).await {
        if e.aggregate_id == id.to_string() {
            log.sequences.insert(e.aggregate_id.clone(), e.sequence);
            showtime.apply(serde_json::from_value(e.payload).unwrap());
        }
    }
    let now = scenario.now;
    let decide = |showtime: &mut Showtime, command| showtime.decide(command).unwrap();
    let closed = [
        ShowtimeCommand::ExpireHold(ExpireHold {
            reservation_id: res(1002),
            now,
        }),
        ShowtimeCommand::ReleaseHold(ReleaseHold {
            reservation_id: res(1004),
            customer_id: scenario.holder,
            now,
        }),
    ];
    for command in closed {
        let e = decide(&mut showtime, command);
        log.append(id, &mut showtime, e).await;
    }
    let mut free: Vec<String> = ["A1", "A2", "A3", "A4", "B3", "B4"]
        .map(String::from)
        .into();
    let mut open: Vec<(u128, UserId, String)> = Vec::new();
    for i in 0..60u128 {
        let command = if i % 3 == 2 || free.is_empty() {
            let (r, who, seat) = open.remove((i as usize * 7) % open.len());
            free.push(seat);
            ShowtimeCommand::ReleaseHold(ReleaseHold {
                reservation_id: res(r),
                customer_id: who,
                now,
            })
        } else {
            let who = UserId(Uuid::from_u128(0x9000 + i));
            let seat = free.remove((i as usize * 5) % free.len());
            let command = hold(5000 + i, who, &[seat.as_str()], now);
            open.push((5000 + i, who, seat));
            command
        };
        let e = decide(&mut showtime, command);
        log.append(id, &mut showtime, e).await;
    }
}

#[tokio::test]
async fn applying_in_batches_of_any_size_gives_the_rows_of_one_event_at_a_time() {
    let pool = fresh_database().await;
    let scenario = history(&pool).await;
    churn(&pool, &scenario).await;
    let events = all_events(&pool).await;
    let released = events
        .iter()
        .filter(|e| e.event_type == "HoldReleased")
        .count();
    assert!(released > 15, "a churn, not a handful: {released} releases");
    for p in all() {
        let mine: Vec<Envelope> = events
            .iter()
            .filter(|e| e.aggregate_type == p.aggregate_type())
            .cloned()
            .collect();
        let mut tx = pool.begin().await.unwrap();
        prepare(&mut tx, p.as_ref(), "one_at_a_time").await.unwrap();
        for e in &mine {
            p.apply(e, &mut tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        for size in [2, 3, 7, 1000] {
            let schema = format!("batches_of_{size}");
            let mut tx = pool.begin().await.unwrap();
            prepare(&mut tx, p.as_ref(), &schema).await.unwrap();
            for batch in mine.chunks(size) {
                apply_batch(p.as_ref(), batch, &mut tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            for table in p.tables() {
                assert_eq!(
                    differences(&pool, table, "one_at_a_time", &schema)
                        .await
                        .unwrap(),
                    0,
                    "{}: {table} in batches of {size}",
                    p.name()
                );
            }
        }
    }
}
