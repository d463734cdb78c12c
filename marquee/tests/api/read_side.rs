//! The read side end to end: commands reach the read models through the relay and JetStream,
//! browsing is served from them, and crashes of relay or projector lose and duplicate nothing.

use crate::helpers::*;
use marquee::startup::Roles;
use marquee_projections::rebuild::{differences, rebuild_into};
use marquee_test_support::{append, event};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_hold_shows_in_the_seat_map_within_a_second() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    app.settle().await;
    let sent = Instant::now();
    assert_eq!(
        app.hold(&ann, &showtime, &["B3"]).await.status(),
        StatusCode::CREATED
    );
    loop {
        // Read straight away, without waiting for the projections first.
        let map: Value = app
            .get_now(&format!("/v1/showtimes/{showtime}/seats"))
            .await;
        if seat_status(&map, "B3").0 == "held" {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "not visible after a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn customers_find_theaters_movies_and_showtimes_near_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let near = app.theater(&admin, &["ssss"]).await; // 40.7, -74.0 (New York)
    let far = app
        .post(
            "/v1/theaters",
            Some(&admin),
            &json!({"name": "Castro", "address": "429 Castro St", "city": "San Francisco",
                    "location": {"lat": 37.76, "lon": -122.43}, "timezone": "America/Los_Angeles",
                    "screens": [{"name": "Main", "layout": ["ssss"]}]}),
        )
        .await;
    let far: Value = far.json().await.unwrap();
    let movie = app.movie(&admin).await;
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::days(1);
    for theater in [&near, &far] {
        let r = app
            .post(
                "/v1/showtimes",
                Some(&admin),
                &json!({"movie_id": movie, "theater_id": theater["id"],
                        "screen_id": theater["screens"][0]["id"], "starts_at": tomorrow,
                        "format": "35mm", "prices": prices()}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let found: Value = app
        .get("/v1/theaters?lat=40.75&lon=-73.99&radius_km=25", None)
        .await
        .json()
        .await
        .unwrap();
    let theaters = found["theaters"].as_array().unwrap();
    assert_eq!(theaters.len(), 1);
    assert_eq!(theaters[0]["id"], near["id"]);
    assert!(theaters[0]["distance_km"].as_f64().unwrap() < 10.0);
    let by_name: Value = app
        .get("/v1/theaters?q=castro", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_name["theaters"][0]["id"], far["id"]);

    let playing: Value = app
        .get("/v1/movies?lat=40.75&lon=-73.99", None)
        .await
        .json()
        .await
        .unwrap();
    let movies = playing["movies"].as_array().unwrap();
    assert_eq!(movies.len(), 1);
    assert_eq!(movies[0]["title"], "Heat");
    let shows = movies[0]["showtimes"].as_array().unwrap();
    assert_eq!(shows.len(), 1, "only the showtime near the point");
    assert_eq!(shows[0]["theater_name"], "Roxy");
    assert_eq!(shows[0]["seats_available"], 4);
    let none: Value = app
        .get("/v1/movies?lat=40.75&lon=-73.99&genre=comedy", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["movies"], json!([]));

    // The date is the theater's own: tomorrow in New York.
    let date = (tomorrow.with_timezone(&chrono_tz_offset_new_york())).date_naive();
    let listed: Value = app
        .get(
            &format!(
                "/v1/showtimes?theater_id={}&date={date}",
                near["id"].as_str().unwrap()
            ),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["showtimes"].as_array().unwrap().len(), 1);
    let by_movie: Value = app
        .get(&format!("/v1/showtimes?movie_id={movie}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_movie["showtimes"].as_array().unwrap().len(), 2);

    let r = app.get("/v1/theaters?lat=40.7", None).await;
    problem(r, 422, "validation-failed").await;
    let r = app.get("/v1/movies?date=tomorrow", None).await;
    problem(r, 400, "malformed-request").await;
}

/// New York is UTC-5 or UTC-4; either way the same calendar day for a time 24 hours ahead at
/// noon-ish is good enough to pick, since the test only needs the theater's local date.
fn chrono_tz_offset_new_york() -> chrono::FixedOffset {
    chrono::FixedOffset::west_opt(5 * 3600).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_relay_and_projector_mid_stream_loses_and_duplicates_nothing() {
    let config = test_config(&fresh_database_url());
    let api_only = Roles {
        api: true,
        relay: false,
        projector: false,
    };
    let app = spawn_roles(config.clone(), api_only).await;
    let relay = Roles {
        api: false,
        relay: true,
        projector: false,
    };
    let projector = Roles {
        api: false,
        relay: false,
        projector: true,
    };
    let mut relay_task = spawn_background(&config, relay).await;
    let mut projector_task = spawn_background(&config, projector).await;

    // Catalog and customers, through the API only (its reads do not wait for projections).
    let admin = app.token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let theater = app
        .theater(&admin, &["ssssssss", "ssssssss", "pppppppp"])
        .await;
    let movie = app.movie(&admin).await;
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let showtime: Value = app
        .post(
            "/v1/showtimes",
            Some(&admin),
            &json!({"movie_id": movie, "theater_id": theater["id"],
            "screen_id": theater["screens"][0]["id"], "starts_at": starts, "prices": prices()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let showtime = showtime["id"].as_str().unwrap().to_owned();
    let mut customers = Vec::new();
    for _ in 0..8 {
        customers.push(app.customer().await);
    }

    // Load: holds, payments and releases, while relay and projector are killed and restarted.
    let seats: Vec<String> = ["A", "B", "C"]
        .iter()
        .flat_map(|r| (1..=8).map(move |n| format!("{r}{n}")))
        .collect();
    for round in 0..12 {
        let token = &customers[round % customers.len()];
        let seat = &seats[round * 2 % seats.len()];
        let r = app.hold(token, &showtime, &[seat]).await;
        if r.status() == StatusCode::CREATED {
            let hold: Value = r.json().await.unwrap();
            let id = hold["id"].as_str().unwrap();
            if round % 3 == 0 {
                app.delete(&format!("/v1/reservations/{id}"), Some(token))
                    .await;
            } else {
                app.pay(token, id, "4242424242424242").await;
            }
        }
        if round % 4 == 1 {
            relay_task.abort();
            let _ = relay_task.await;
            relay_task = spawn_background(&config, relay).await;
        }
        if round % 4 == 3 {
            projector_task.abort();
            let _ = projector_task.await;
            projector_task = spawn_background(&config, projector).await;
        }
    }
    app.settle().await;

    for p in marquee_projections::all() {
        let schema = format!("check_{}", p.name());
        rebuild_into(&app.pool, p.as_ref(), &schema).await.unwrap();
        for table in p.tables() {
            let diff = differences(&app.pool, table, "public", &schema)
                .await
                .unwrap();
            assert_eq!(diff, 0, "{table} differs from a rebuild after crashes");
        }
    }
    relay_task.abort();
    projector_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_keeps_failing_is_parked_and_its_aggregate_waits_behind_it() {
    let config = test_config(&fresh_database_url());
    let app = spawn_with(config.clone()).await;
    let poisoned = app.showtime().await;
    let healthy = app.showtime().await;
    let ann = app.customer().await;
    app.settle().await;
    // An event no projection can read (as if written by a buggy build), then a good one
    // behind it. (Appended straight into the log: the engine itself never writes either.)
    let garbage = serde_json::json!({"SeatsHeld": {"garbage": true}});
    let now = chrono::Utc::now();
    let good = serde_json::json!({"SeatsHeld": {"reservation_id": uuid::Uuid::now_v7(),
        "customer_id": uuid::Uuid::now_v7(), "seats": ["A1"],
        "total": {"amount": 1250, "currency": "USD"}, "held_at": now,
        "expires_at": now + chrono::TimeDelta::minutes(7)}});
    for (sequence, payload) in [(2, garbage), (3, good)] {
        append(
            &app.pool,
            &[event(
                "Showtime",
                &poisoned,
                sequence,
                "SeatsHeld",
                "1",
                payload,
            )],
        )
        .await;
    }
    assert_eq!(
        app.hold(&ann, &healthy, &["A1"]).await.status(),
        StatusCode::CREATED
    );

    // Five deliveries with backoff, then parked.
    let mut parked = Vec::new();
    for _ in 0..300 {
        parked = sqlx::query_as::<_, (String, String, i64)>(
            "select projection, aggregate_id, sequence from parked_events order by projection",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if parked.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let projections: Vec<&str> = parked.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        projections,
        ["seat_maps", "showtimes", "tickets"],
        "every Showtime projection parks it"
    );
    assert!(parked.iter().all(|p| p.1 == poisoned && p.2 == 2));
    // The healthy showtime is served; the parked one waits: the good event behind the bad
    // one is not applied.
    let healthy_map: Value = app.get_now(&format!("/v1/showtimes/{healthy}/seats")).await;
    assert_eq!(seat_status(&healthy_map, "A1").0, "held");
    let waiting: Value = app
        .get_now(&format!("/v1/showtimes/{poisoned}/seats"))
        .await;
    assert_eq!(seat_status(&waiting, "A1").0, "available");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("marquee_consumer_parked_total"),
        "parking is counted"
    );
}
