use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn id_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_whole_booking_flow_from_hold_to_tickets() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;

    let r = app.hold(&ann, &showtime, &["A1", "C2"]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let hold: Value = r.json().await.unwrap();
    assert_eq!(hold["status"], "held");
    assert_eq!(hold["total"]["amount"], 1250 + 1800);
    assert!(hold["expires_in_seconds"].as_i64().unwrap() > 400);

    let map = app.seat_statuses(&showtime, Some(&ann)).await;
    assert_eq!(seat_status(&map, "A1"), ("held".into(), true));
    assert_eq!(
        (map["held"].as_u64(), map["available"].as_u64()),
        (Some(2), Some(22))
    );
    let anonymous = app.seat_statuses(&showtime, None).await;
    assert_eq!(seat_status(&anonymous, "A1"), ("held".into(), false));

    let declined = app
        .pay(&ann, hold["id"].as_str().unwrap(), "4000000000000002")
        .await;
    let body = problem(declined, 402, "payment-declined").await;
    assert_eq!(body["reason"], "card_declined");
    let still = app.seat_statuses(&showtime, None).await;
    assert_eq!(
        seat_status(&still, "A1").0,
        "held",
        "a declined card keeps the hold"
    );

    let r = app
        .pay(&ann, hold["id"].as_str().unwrap(), "4242424242424242")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let bought: Value = r.json().await.unwrap();
    let tickets = bought["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0]["movie_title"], "Heat");
    assert_eq!(tickets[1]["price"]["amount"], 1800);
    assert_eq!(tickets[0]["status"], "valid");

    let map = app.seat_statuses(&showtime, None).await;
    assert_eq!(seat_status(&map, "C2").0, "sold");
    let mine: Value = app
        .get("/v1/users/me/tickets", Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["tickets"].as_array().unwrap().len(), 2);
    let reservation: Value = app
        .get(
            &format!("/v1/reservations/{}", hold["id"].as_str().unwrap()),
            Some(&ann),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reservation["status"], "confirmed");
    let types = app.event_types(&showtime).await;
    assert_eq!(
        types,
        [
            "ShowtimeScheduled",
            "SeatsHeld",
            "PaymentStarted",
            "PaymentFailed",
            "PaymentStarted",
            "TicketsIssued"
        ]
    );
}

#[tokio::test]
async fn a_held_seat_cannot_be_held_by_someone_else() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    id_of(app.hold(&ann, &showtime, &["A1", "A2"]).await).await;
    let before = app.event_count().await;
    let r = app.hold(&bob, &showtime, &["A2", "A3"]).await;
    let body = problem(r, 409, "seats-unavailable").await;
    assert_eq!(body["seats"], serde_json::json!(["A2"]));
    assert_eq!(
        app.event_count().await,
        before,
        "all or nothing: A3 was not held"
    );
}

#[tokio::test]
async fn someone_elses_reservations_and_tickets_are_not_found() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let eve = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    problem(
        app.get(&format!("/v1/reservations/{hold}"), Some(&eve))
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.delete(&format!("/v1/reservations/{hold}"), Some(&eve))
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.pay(&eve, &hold, "4242424242424242").await,
        404,
        "not-found",
    )
    .await;
    let bought: Value = app
        .pay(&ann, &hold, "4242424242424242")
        .await
        .json()
        .await
        .unwrap();
    let ticket = bought["tickets"][0]["id"].as_str().unwrap();
    problem(
        app.get(&format!("/v1/tickets/{ticket}"), Some(&eve)).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        app.get(&format!("/v1/tickets/{ticket}"), Some(&ann))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn releasing_a_hold_frees_its_seats_at_once() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["B1"]).await).await;
    let r = app
        .delete(&format!("/v1/reservations/{hold}"), Some(&ann))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    id_of(app.hold(&bob, &showtime, &["B1"]).await).await;
    let r = app.pay(&ann, &hold, "4242424242424242").await;
    problem(r, 410, "reservation-expired").await;
}

#[tokio::test]
async fn a_new_hold_replaces_my_earlier_unpaid_hold() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let first = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    id_of(app.hold(&ann, &showtime, &["A2"]).await).await;
    let old: Value = app
        .get(&format!("/v1/reservations/{first}"), Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["status"], "released");
    assert_eq!(
        seat_status(&app.seat_statuses(&showtime, None).await, "A1").0,
        "available"
    );
}

#[tokio::test]
async fn bad_seat_choices_are_validation_errors() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    for seats in [
        vec![],
        vec!["A1"; 11],
        vec!["A1", "A1"],
        vec!["Z9"],
        vec!["a1"],
    ] {
        let r = app.hold(&ann, &showtime, &seats).await;
        problem(r, 422, "validation-failed").await;
    }
    let r = app
        .hold(&ann, &uuid::Uuid::now_v7().to_string(), &["A1"])
        .await;
    problem(r, 404, "not-found").await;
    assert_eq!(app.event_types(&showtime).await.len(), 1);
}

#[tokio::test]
async fn an_expired_hold_is_free_at_once_and_the_timer_records_it() {
    let mut config = test_config(&fresh_database_url());
    config.hold_for = Duration::from_secs(1);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        seat_status(&app.seat_statuses(&showtime, None).await, "A1").0,
        "available"
    );
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        410,
        "reservation-expired",
    )
    .await;
    // The timer ticks every half second.
    let mut recorded = false;
    for _ in 0..20 {
        if app
            .event_types(&showtime)
            .await
            .contains(&"HoldExpired".to_owned())
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recorded, "the timer records the expiry");
    let expired = &app.events("event_type=HoldExpired").await[0]["metadata"];
    assert_eq!(expired["actor"], "timer");
    assert_eq!(expired["command"], "ExpireHold");
    id_of(app.hold(&bob, &showtime, &["A1"]).await).await;
}

#[tokio::test]
async fn a_payment_that_completes_after_its_pin_ran_out_is_refunded_and_recorded() {
    let mut config = test_config(&fresh_database_url());
    config.payment_pin = Duration::from_millis(300);
    config.payment_latency = Duration::from_millis(800);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    let r = app.pay(&ann, &hold, "4242424242424242").await;
    let body = problem(r, 410, "reservation-expired").await;
    assert!(body["detail"].as_str().unwrap().contains("refunded"));
    let types = app.event_types(&showtime).await;
    assert!(types.contains(&"PaymentRefunded".to_owned()), "{types:?}");
    assert!(!types.contains(&"TicketsIssued".to_owned()));
}

#[tokio::test]
async fn a_slow_payment_started_inside_the_hold_still_issues_tickets() {
    let mut config = test_config(&fresh_database_url());
    config.hold_for = Duration::from_secs(1);
    config.payment_latency = Duration::from_millis(1500);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    let paying = {
        let app_url = app.url("/v1/tickets");
        let client = app.client.clone();
        let ann = ann.clone();
        let hold = hold.clone();
        tokio::spawn(async move {
            client
                .post(app_url)
                .bearer_auth(ann)
                .json(&serde_json::json!({"reservation_id": hold, "payment": {"card_number": "4242424242424242"}}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // While the payment is in flight the hold outlives its own expiry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    problem(
        app.hold(&bob, &showtime, &["A1"]).await,
        409,
        "seats-unavailable",
    )
    .await;
    assert_eq!(paying.await.unwrap(), StatusCode::CREATED);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    let restarted = spawn_with(app.config.clone()).await;
    let r: Value = restarted
        .get(&format!("/v1/reservations/{hold}"), Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "held");
    let bob = restarted.customer().await;
    problem(
        restarted.hold(&bob, &showtime, &["A1"]).await,
        409,
        "seats-unavailable",
    )
    .await;
}

#[tokio::test]
async fn events_name_who_and_which_request_caused_them_but_hold_no_personal_data() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let me: Value = app
        .get("/v1/users/me", Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .client
        .post(app.url("/v1/reservations"))
        .bearer_auth(&ann)
        .header("x-request-id", "req-123")
        .json(&serde_json::json!({"showtime_id": showtime, "seats": ["A1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let hold: Value = r.json().await.unwrap();
    app.pay(&ann, hold["id"].as_str().unwrap(), "4242424242424242")
        .await;
    let meta = app.events("event_type=SeatsHeld").await[0]["metadata"].clone();
    assert_eq!(
        meta["actor"],
        format!("user:{}", me["id"].as_str().unwrap())
    );
    assert_eq!(meta["correlation_id"], "req-123");
    let leaks = app
        .events("")
        .await
        .iter()
        .map(|e| format!("{}{}", e["payload"], e["metadata"]))
        .filter(|text| {
            ["@", "4242424242424242", "Test Customer", "password"]
                .iter()
                .any(|private| text.contains(private))
        })
        .count();
    assert_eq!(
        leaks, 0,
        "no emails, names, card numbers or passwords in events"
    );
}

#[tokio::test]
async fn paying_twice_for_one_reservation_is_a_conflict_and_charges_once() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = id_of(app.hold(&ann, &showtime, &["A1"]).await).await;
    assert_eq!(
        app.pay(&ann, &hold, "4242424242424242").await.status(),
        StatusCode::CREATED
    );
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        409,
        "conflict",
    )
    .await;
    problem(
        app.delete(&format!("/v1/reservations/{hold}"), Some(&ann))
            .await,
        409,
        "conflict",
    )
    .await;
    let started = app
        .event_types(&showtime)
        .await
        .iter()
        .filter(|t| *t == "PaymentStarted")
        .count();
    assert_eq!(started, 1);
}

#[tokio::test]
async fn holding_again_after_the_window_is_refused_with_hold_cooldown_and_changes_nothing() {
    let mut config = test_config(&fresh_database_url());
    config.hold_for = Duration::from_secs(1);
    config.hold_cooldown = Duration::from_secs(60);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let first = app.held(&ann, &showtime, &["A1"]).await;
    let renewed = app.held(&ann, &showtime, &["A2"]).await;
    assert_eq!(
        renewed["expires_at"], first["expires_at"],
        "holding again keeps the first hold's deadline"
    );
    // Wait until the timer has recorded the renewal's expiry, so nothing else is written.
    for _ in 0..40 {
        if app
            .event_types(&showtime)
            .await
            .contains(&"HoldExpired".to_owned())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let events = app.event_count().await;
    let r = app.hold(&ann, &showtime, &["A3"]).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = problem(r, 429, "hold-cooldown").await;
    // The renewal ran out a moment ago (a second after the first hold); the cooldown is 60 s
    // from then.
    assert!(
        (55..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert!(body["retry_at"].is_string(), "{body}");
    assert_eq!(app.event_count().await, events, "a refusal records nothing");
    assert_eq!(
        seat_status(&app.seat_statuses(&showtime, None).await, "A3").0,
        "available"
    );
    id_of(app.hold(&bob, &showtime, &["A3"]).await).await;
}
