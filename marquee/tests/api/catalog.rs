use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn customers_cannot_run_the_catalog() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let body = json!({"title": "Heat", "runtime_minutes": 170});
    problem(
        app.post("/v1/movies", Some(&customer), &body).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        app.post("/v1/movies", None, &body).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_theater_echoes_its_screens_with_ids_and_capacity() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let t = app
        .theater(
            &admin,
            &["ss.ssss.ss", "ss.ssss.ss", "pp.pppp.pp", "ww.cccc.ww"],
        )
        .await;
    assert_eq!(t["screens"][0]["capacity"], 32);
    let fetched: Value = app
        .get(&format!("/v1/theaters/{}", t["id"].as_str().unwrap()), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, t);
}

#[tokio::test]
async fn a_bad_layout_row_is_named_in_the_error() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let r = app
        .post(
            "/v1/theaters",
            Some(&admin),
            &json!({"name": "Roxy", "address": "1", "city": "X",
                    "location": {"lat": 95.0, "lon": 0.0}, "timezone": "Mars/Base",
                    "screens": [{"name": "S", "layout": ["ss", "sx"]}]}),
        )
        .await;
    let body = problem(r, 422, "validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "location", "{body}");
    let r = app
        .post(
            "/v1/theaters",
            Some(&admin),
            &json!({"name": "Roxy", "address": "1", "city": "X",
                    "location": {"lat": 45.0, "lon": 0.0}, "timezone": "Europe/Paris",
                    "screens": [{"name": "S", "layout": ["ss", "sx"]}]}),
        )
        .await;
    let body = problem(r, 422, "validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "screens[0].layout[1]", "{body}");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn overlapping_showtimes_on_a_screen_are_refused_with_screen_busy() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["ssss"]).await;
    let movie = app.movie(&admin).await; // 170 minutes
    let start = chrono::Utc::now() + chrono::TimeDelta::days(2);
    let schedule = |at: chrono::DateTime<chrono::Utc>| {
        json!({"movie_id": movie, "theater_id": theater["id"],
               "screen_id": theater["screens"][0]["id"], "starts_at": at, "prices": prices()})
    };
    let first = app
        .post("/v1/showtimes", Some(&admin), &schedule(start))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    // 170 minutes plus a 15 minute cleaning gap: 3 hours later still overlaps by 5 minutes.
    let overlapping = start + chrono::TimeDelta::minutes(180);
    let r = app
        .post("/v1/showtimes", Some(&admin), &schedule(overlapping))
        .await;
    problem(r, 409, "screen-busy").await;
    let after_gap = start + chrono::TimeDelta::minutes(185);
    let r = app
        .post("/v1/showtimes", Some(&admin), &schedule(after_gap))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn every_seat_kind_needs_a_price_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["sspp"]).await;
    let movie = app.movie(&admin).await;
    let start = chrono::Utc::now() + chrono::TimeDelta::days(2);
    let r = app
        .post(
            "/v1/showtimes",
            Some(&admin),
            &json!({"movie_id": movie, "theater_id": theater["id"],
                    "screen_id": theater["screens"][0]["id"], "starts_at": start,
                    "prices": {"standard": {"amount": 1000, "currency": "USD"}}}),
        )
        .await;
    let body = problem(r, 422, "validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "prices.premium");
    let r = app
        .post(
            "/v1/showtimes",
            Some(&admin),
            &json!({"movie_id": uuid::Uuid::now_v7(), "theater_id": theater["id"],
                    "screen_id": theater["screens"][0]["id"], "starts_at": start,
                    "prices": prices()}),
        )
        .await;
    problem(r, 404, "not-found").await;
    let r = app
        .post(
            "/v1/showtimes",
            Some(&admin),
            &json!({"movie_id": movie, "theater_id": theater["id"],
                    "screen_id": uuid::Uuid::now_v7(), "starts_at": start, "prices": prices()}),
        )
        .await;
    problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn movies_can_be_patched_field_by_field() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let id = app.movie(&admin).await;
    let r = app
        .client
        .patch(app.url(&format!("/v1/movies/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"synopsis": "A heist.", "genres": ["Crime", "Drama"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let movie: Value = r.json().await.unwrap();
    assert_eq!(movie["title"], "Heat");
    assert_eq!(movie["synopsis"], "A heist.");
    assert_eq!(movie["genres"], json!(["crime", "drama"]));
}

#[tokio::test]
async fn cancelling_a_showtime_releases_holds_refunds_tickets_and_frees_the_screen() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let paid: Value = app.held(&ann, &showtime, &["A1"]).await;
    let tickets: Value = app
        .pay(&ann, paid["id"].as_str().unwrap(), "4242424242424242")
        .await
        .json()
        .await
        .unwrap();
    let held: Value = app.held(&bob, &showtime, &["A2"]).await;

    let admin = app.admin().await;
    let r = app
        .delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let ticket_id = tickets["tickets"][0]["id"].as_str().unwrap();
    let ticket: Value = app
        .get(&format!("/v1/tickets/{ticket_id}"), Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ticket["status"], "refunded");
    let bobs: Value = app
        .get(
            &format!("/v1/reservations/{}", held["id"].as_str().unwrap()),
            Some(&bob),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["status"], "released");
    problem(
        app.hold(&bob, &showtime, &["A3"]).await,
        422,
        "showtime-closed",
    )
    .await;
    let st: Value = app
        .get(&format!("/v1/showtimes/{showtime}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(st["status"], "cancelled");
    // Cancelling again is harmless and records nothing more.
    let before = app.event_count().await;
    let r = app
        .delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.event_count().await, before);
    let types = app.event_types(&showtime).await;
    assert!(types.contains(&"TicketRefunded".to_owned()), "{types:?}");
}

#[tokio::test]
async fn refunds_record_the_cancellation_that_caused_them() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold: Value = app.held(&ann, &showtime, &["A1"]).await;
    app.pay(&ann, hold["id"].as_str().unwrap(), "4242424242424242")
        .await;
    let admin = app.admin().await;
    app.delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    let metas: Vec<(Value, Value)> = app
        .events(&format!("aggregate_id={showtime}"))
        .await
        .into_iter()
        .filter(|e| {
            ["ShowtimeCancelled", "TicketRefunded", "TicketsIssued"]
                .contains(&e["event_type"].as_str().unwrap())
        })
        .map(|e| (e["event_type"].clone(), e["metadata"].clone()))
        .collect();
    let [(_, issued), (_, cancelled), (_, refunded)] = &metas[..] else {
        panic!("{metas:?}");
    };
    assert_eq!(issued["command"], "ConfirmPayment");
    assert_eq!(cancelled["command"], "CancelShowtime");
    assert_eq!(refunded["command"], "CancelShowtime");
    assert_eq!(refunded["causation_id"], cancelled["causation_id"]);
    assert_ne!(refunded["causation_id"], issued["causation_id"]);
    assert!(cancelled["actor"].as_str().unwrap().starts_with("user:"));
}
