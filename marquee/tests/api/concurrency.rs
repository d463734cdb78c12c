//! Many customers at once on a few seats: no seat is ever held or sold twice, and every
//! acknowledged hold is in the event store.

use crate::helpers::*;
use futures::future::join_all;
use futures::StreamExt;
use marquee_domain::audit::audit;
use marquee_domain::showtime::ShowtimeEvent;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

const CUSTOMERS: usize = 120;
const SEATS: [&str; 6] = ["A1", "A2", "A3", "A4", "B1", "B2"];

/// Half the customers want one contested seat, the other half two of them.
fn wish(i: usize) -> Vec<&'static str> {
    let n = SEATS.len();
    if i.is_multiple_of(2) {
        vec![SEATS[(i / 2) % n]]
    } else {
        vec![SEATS[(i / 2) % n], SEATS[(i / 2 + 3) % n]]
    }
}

/// The showtime's events as the history API shows them, each payload tagged with its event
/// type again (the API shows the fields alone) to read it as a `ShowtimeEvent`.
async fn stored_events(app: &TestApp, showtime: &str) -> Vec<ShowtimeEvent> {
    app.events(&format!("aggregate_type=Showtime&aggregate_id={showtime}"))
        .await
        .into_iter()
        .map(|e| {
            let event_type = e["event_type"].as_str().unwrap().to_owned();
            let tagged = serde_json::Map::from_iter([(event_type, e["payload"].clone())]);
            serde_json::from_value(Value::Object(tagged)).unwrap()
        })
        .collect()
}

/// Fires every customer's hold at once, spread over `apps` (engine processes sharing one
/// database), then every successful holder pays at once. Checks the invariants after each.
async fn contend(apps: &[&TestApp]) {
    let first = apps[0];
    let showtime = first.showtime().await;
    // Registration hashes passwords (deliberately slow); a few at a time is enough.
    let tokens: Vec<String> = futures::stream::iter((0..CUSTOMERS).map(|_| first.customer()))
        .buffered(8)
        .collect()
        .await;

    let holds = join_all(tokens.iter().enumerate().map(|(i, token)| {
        let app = apps[i % apps.len()];
        let showtime = showtime.clone();
        async move { (i, app.hold(token, &showtime, &wish(i)).await) }
    }))
    .await;
    let mut acknowledged = Vec::new();
    for (i, r) in holds {
        match r.status() {
            StatusCode::CREATED => {
                let body: Value = r.json().await.unwrap();
                acknowledged.push((
                    i,
                    body["id"].as_str().unwrap().to_owned(),
                    body["seats"].clone(),
                ));
            }
            StatusCode::CONFLICT => {
                problem(r, 409, "seats-unavailable").await;
            }
            other => panic!("unexpected answer {other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(!acknowledged.is_empty(), "someone got seats");

    // Every acknowledged hold is stored, and no seat is in two of them (holds last minutes).
    let events = stored_events(first, &showtime).await;
    let stored: HashSet<String> = events
        .iter()
        .filter_map(|e| match e {
            ShowtimeEvent::SeatsHeld(h) => Some(h.reservation_id.to_string()),
            _ => None,
        })
        .collect();
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, id, seats) in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged hold {id} is in the event store"
        );
        for seat in seats.as_array().unwrap() {
            let seat = seat.as_str().unwrap().to_owned();
            if let Some(other) = owner.insert(seat.clone(), *i) {
                panic!("seat {seat} acknowledged to customers {other} and {i}");
            }
        }
    }
    assert_eq!(audit(&events), Vec::<String>::new());

    // Everyone who holds seats pays at once, through any process.
    let payments = join_all(acknowledged.iter().map(|(i, id, _)| {
        let app = apps[(i + 1) % apps.len()];
        let token = &tokens[*i];
        async move { app.pay(token, id, "4242424242424242").await }
    }))
    .await;
    let mut sold = HashSet::new();
    for r in payments {
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        for t in body["tickets"].as_array().unwrap() {
            let seat = t["seat"].as_str().unwrap().to_owned();
            assert!(sold.insert(seat.clone()), "seat {seat} sold twice");
        }
    }
    let events = stored_events(first, &showtime).await;
    assert_eq!(audit(&events), Vec::<String>::new());
    let map = first.seat_statuses(&showtime, None).await;
    assert_eq!(map["sold"].as_u64().unwrap() as usize, sold.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_customers_racing_for_six_seats_never_share_one() {
    let app = spawn_app().await;
    contend(&[&app]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engine_processes_on_one_database_never_share_a_seat() {
    let app = spawn_app().await;
    let other = spawn_with(app.config.clone()).await;
    contend(&[&app, &other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_direct_writer_baseline_never_shares_a_seat_either() {
    let mut config = test_config(&fresh_database_url());
    config.writer_mode = marquee_event_store::writer::WriterMode::Direct;
    let app = spawn_with(config).await;
    contend(&[&app]).await;
}

#[tokio::test]
async fn commands_that_waited_too_long_in_the_queue_are_shed_with_503_and_change_nothing() {
    let mut config = test_config(&fresh_database_url());
    config.showtime_max_wait = Some(std::time::Duration::from_micros(1));
    let app = spawn_with(config).await;
    let showtime = app.showtime_with_layout(&["ssssssssss"; 10]).await;
    let mut customers = Vec::new();
    for _ in 0..60 {
        customers.push(app.customer().await);
    }
    let rows = "ABCDEFGHIJ".as_bytes();
    let app = &app;
    let answers = join_all(customers.iter().enumerate().map(|(i, c)| {
        let seat = format!("{}{}", rows[i % 10] as char, i / 10 + 1);
        let showtime = showtime.clone();
        async move { app.hold(c, &showtime, &[seat.as_str()]).await }
    }))
    .await;
    let mut held = 0;
    let mut shed = 0;
    for r in answers {
        match r.status().as_u16() {
            201 => held += 1,
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                problem(r, 503, "overloaded").await;
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed > 0, "nothing was shed: the queue never waited 1 µs?");
    // Only the admitted holds were recorded.
    let events = stored_events(app, &showtime).await;
    let holds = events
        .iter()
        .filter(|e| matches!(e, ShowtimeEvent::SeatsHeld(_)))
        .count();
    assert_eq!(holds, held);
}

/// A process whose writer last saw a seat held must not refuse it once another process has
/// released it: a refusal is decided again on the newer state, whether it came alone or in a
/// batch with holds that were appended (whose append then conflicts with the other
/// process's events). The release through the first process finds a hold it never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_released_through_another_process_can_be_held_at_once() {
    let app = spawn_app().await;
    let other = spawn_with(app.config.clone()).await;
    let showtime = app.showtime_with_layout(&["ssssssss"; 5]).await;
    let tokens: Vec<String> = join_all((0..4).map(|_| app.customer())).await;
    for round in 0..5 {
        let seat = ["A1", "A2", "A3", "A4", "B1"][round];
        // Held through `other`; `app`'s writer sees the hold when it loads or catches up.
        let held = other.hold_id(&tokens[0], &showtime, &[seat]).await;
        app.held(&tokens[1], &showtime, &[&format!("C{}", round + 1)])
            .await;
        let r = app.hold(&tokens[2], &showtime, &[seat]).await;
        problem(r, 409, "seats-unavailable").await;
        // Released through `other`, behind `app`'s back.
        let r = other
            .delete(&format!("/v1/reservations/{held}"), Some(&tokens[0]))
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        // Both at once, so they can share one batch of `app`'s writer.
        let next_to = format!("D{}", round + 1);
        let (wanted, next_to) = ([seat], [next_to.as_str()]);
        let (freed, beside) = futures::join!(
            app.hold(&tokens[2], &showtime, &wanted),
            app.hold(&tokens[3], &showtime, &next_to),
        );
        assert_eq!(freed.status(), StatusCode::CREATED, "{seat} was released");
        assert_eq!(beside.status(), StatusCode::CREATED);
    }
    // A hold made through `app` is released through `other`, which never cached it.
    let mine = app.hold_id(&tokens[1], &showtime, &["E1"]).await;
    let r = other
        .delete(&format!("/v1/reservations/{mine}"), Some(&tokens[1]))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // And nobody else can release it, through either process.
    let theirs = app.hold_id(&tokens[1], &showtime, &["E2"]).await;
    for process in [&app, &other] {
        let r = process
            .delete(&format!("/v1/reservations/{theirs}"), Some(&tokens[0]))
            .await;
        problem(r, 404, "not-found").await;
    }
    assert_eq!(
        audit(&stored_events(&app, &showtime).await),
        Vec::<String>::new()
    );
}
