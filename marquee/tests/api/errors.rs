use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400_and_change_nothing() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let before = app.event_count().await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/v1/reservations"))
            .bearer_auth(&ann)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    problem(send("{not json").await.unwrap(), 400, "malformed-request").await;
    problem(
        send(r#"{"showtime_id": 5, "seats": "A1"}"#).await.unwrap(),
        400,
        "malformed-request",
    )
    .await;
    let deep = "[".repeat(10_000);
    let r = app
        .client
        .post(app.url("/v1/reservations"))
        .bearer_auth(&ann)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    problem(r, 400, "malformed-request").await;
    let _ = showtime;
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/users"))
        .body(r#"{"email":"a@b.co","password":"12345678","name":"A"}"#)
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported-media-type").await;
}

#[tokio::test]
async fn a_huge_body_is_413() {
    let app = spawn_app().await;
    let name = "x".repeat(200_000);
    let r = app
        .post(
            "/v1/users",
            None,
            &json!({"email": "a@b.co", "password": "12345678", "name": name}),
        )
        .await;
    problem(r, 413, "payload-too-large").await;
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_problems_too() {
    let app = spawn_app().await;
    problem(app.get("/v1/nothing-here", None).await, 404, "not-found").await;
    problem(
        app.get("/v1/showtimes/not-a-uuid", None).await,
        404,
        "not-found",
    )
    .await;
    let id = uuid::Uuid::now_v7();
    problem(
        app.get(&format!("/v1/showtimes/{id}/seats"), None).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get(&format!("/v1/movies/{id}"), None).await,
        404,
        "not-found",
    )
    .await;
    let r = app.client.put(app.url("/v1/movies")).send().await.unwrap();
    problem(r, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn bad_card_numbers_are_validation_errors_and_charge_nothing() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold: serde_json::Value = app.held(&ann, &showtime, &["A1"]).await;
    let before = app.event_count().await;
    let r = app
        .pay(&ann, hold["id"].as_str().unwrap(), "4242424242424241")
        .await;
    let body = problem(r, 422, "validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "payment.card_number");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn responses_carry_security_headers_and_a_request_id() {
    let app = spawn_app().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn the_openapi_document_and_docs_page_are_served() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/reservations",
        "/v1/tickets",
        "/v1/showtimes/{id}/seats",
        "/v1/theaters",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let docs = app.get("/docs/", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let ready = app.get("/readyz", None).await;
    assert!(ready.status() == StatusCode::OK || ready.status() == StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn negative_fractional_and_overflowing_money_and_bad_times_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["ss"]).await;
    let movie = app.movie(&admin).await;
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let schedule = |price: serde_json::Value, at: serde_json::Value| {
        json!({"movie_id": movie, "theater_id": theater["id"],
               "screen_id": theater["screens"][0]["id"], "starts_at": at,
               "prices": {"standard": price}})
    };
    let before = app.event_count().await;
    let cases = [
        (
            json!({"amount": -1, "currency": "USD"}),
            json!(tomorrow),
            422,
            "validation-failed",
        ),
        (
            json!({"amount": 1_000_000_000_000i64, "currency": "USD"}),
            json!(tomorrow),
            422,
            "validation-failed",
        ),
        (
            json!({"amount": 12.5, "currency": "USD"}),
            json!(tomorrow),
            400,
            "malformed-request",
        ),
        (
            json!({"amount": 1e30, "currency": "USD"}),
            json!(tomorrow),
            400,
            "malformed-request",
        ),
        (
            json!({"amount": 100, "currency": "dollars"}),
            json!(tomorrow),
            422,
            "validation-failed",
        ),
        (
            json!({"amount": 100, "currency": "USD"}),
            json!("1999-01-01T00:00:00Z"),
            422,
            "validation-failed",
        ),
        (
            json!({"amount": 100, "currency": "USD"}),
            json!("9999-01-01T00:00:00Z"),
            422,
            "validation-failed",
        ),
        (
            json!({"amount": 100, "currency": "USD"}),
            json!("next tuesday"),
            400,
            "malformed-request",
        ),
    ];
    for (price, at, status, slug) in cases {
        let r = app
            .post("/v1/showtimes", Some(&admin), &schedule(price, at))
            .await;
        problem(r, status, slug).await;
    }
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn overlong_and_control_character_fields_are_refused_but_unicode_is_fine() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let long = "é".repeat(301);
    let r = app
        .post(
            "/v1/movies",
            Some(&admin),
            &json!({"title": long, "runtime_minutes": 90}),
        )
        .await;
    problem(r, 422, "validation-failed").await;
    let r = app
        .post(
            "/v1/movies",
            Some(&admin),
            &json!({"title": "a\u{0007}b", "runtime_minutes": 90}),
        )
        .await;
    problem(r, 422, "validation-failed").await;
    let r = app
        .post(
            "/v1/movies",
            Some(&admin),
            &json!({"title": "Amélie 🎬 千と千尋", "runtime_minutes": 122}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let movie: serde_json::Value = r.json().await.unwrap();
    assert_eq!(movie["title"], "Amélie 🎬 千と千尋");
    let r = app
        .post(
            "/v1/movies",
            Some(&admin),
            &json!({"title": "X", "runtime_minutes": -5}),
        )
        .await;
    problem(r, 422, "validation-failed").await;
}

#[tokio::test]
async fn a_full_showtime_queue_sheds_with_503_and_retry_after() {
    let mut config = test_config(&fresh_database_url());
    config.showtime_queue = 1;
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let seats = ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"];
    let answers = futures::future::join_all((0..200).map(|i| {
        let (app, ann, showtime) = (&app, &ann, &showtime);
        async move { app.hold(ann, showtime, &[seats[i % seats.len()]]).await }
    }))
    .await;
    let mut shed = 0;
    for r in answers {
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers()["retry-after"], "1");
            problem(r, 503, "overloaded").await;
            shed += 1;
        }
    }
    assert!(shed > 0, "200 holds at once cannot all fit a queue of one");
}

/// `shed` was answered `503 overloaded` with `Retry-After: 1`, and the health check sent
/// meanwhile was served.
async fn shed_while_healthy(shed: reqwest::Response, health: reqwest::Response) {
    assert_eq!(shed.headers()["retry-after"], "1");
    problem(shed, 503, "overloaded").await;
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "health checks are never shed"
    );
}

#[tokio::test]
async fn requests_are_shed_while_the_process_runs_late() {
    let mut config = test_config(&fresh_database_url());
    // High enough that two cores shared with the other tests (and their password hashing) do
    // not keep it up for long, since the setup below must not be shed; low enough for the
    // runtime held up below to be far past it.
    config.max_lag = Some(std::time::Duration::from_millis(50));
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let before = app.event_count().await;

    // Twenty tasks ready at once on the runtime that serves, each holding its only thread
    // for 10 ms per turn: whatever becomes ready waits about 200 ms for its turn, four times
    // the most allowed, as on a process whose cores are all busy.
    let busy: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(2500);
                while std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    // Long enough for the smoothed lag to pass twice the limit, where everything is shed.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (shed, health) = (
        app.hold(&ann, &showtime, &["A1"]).await,
        app.get("/healthz", None).await,
    );
    futures::future::join_all(busy).await;

    shed_while_healthy(shed, health).await;
    assert_eq!(
        app.event_count().await,
        before,
        "the shed hold changed nothing"
    );
    // Once the runtime has caught up, the same hold is served.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.hold(&ann, &showtime, &["A1"]).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn requests_past_the_in_flight_cap_are_shed_at_once() {
    let mut config = test_config(&fresh_database_url());
    config.max_in_flight = Some(1);
    // A payment that stays in flight long enough to be the one request in progress.
    config.payment_latency = std::time::Duration::from_millis(1500);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let (ann, bob) = (app.customer().await, app.customer().await);
    let reservation = app.hold_id(&ann, &showtime, &["A1"]).await;

    let (paid, (shed, health)) =
        tokio::join!(app.pay(&ann, &reservation, "4242424242424242"), async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            let shed = app.hold(&ann, &showtime, &["A2"]).await;
            (shed, app.get("/healthz", None).await)
        });

    shed_while_healthy(shed, health).await;
    assert_eq!(
        paid.status(),
        StatusCode::CREATED,
        "the admitted request was served"
    );
    // The shed hold changed nothing: A2 is free for someone else, now that there is room.
    assert_eq!(
        app.hold(&bob, &showtime, &["A2"]).await.status(),
        StatusCode::CREATED
    );
}
