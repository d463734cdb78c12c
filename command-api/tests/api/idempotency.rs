use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn the_same_key_and_body_returns_the_first_response_and_holds_once() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let send = |seats: Value| {
        app.client
            .post(app.url("/v1/reservations"))
            .bearer_auth(&ann)
            .header("idempotency-key", "hold-1")
            .json(&json!({"showtime_id": showtime, "seats": seats}))
            .send()
    };
    let first = send(json!(["A1"])).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = send(json!(["A1"])).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    let holds = app
        .event_types(&showtime)
        .await
        .iter()
        .filter(|t| *t == "SeatsHeld")
        .count();
    assert_eq!(holds, 1);
    let other = send(json!(["A2"])).await.unwrap();
    problem(other, 422, "validation-failed").await;
}

#[tokio::test]
async fn a_retried_payment_never_charges_twice() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold: Value = app.held(&ann, &showtime, &["A1"]).await;
    let pay = || {
        app.client
            .post(app.url("/v1/tickets"))
            .bearer_auth(&ann)
            .header("idempotency-key", "pay-1")
            .json(&json!({"reservation_id": hold["id"], "payment": {"card_number": "4242424242424242"}}))
            .send()
    };
    let (a, b) = tokio::join!(pay(), pay());
    let statuses = [a.unwrap().status(), b.unwrap().status()];
    assert!(statuses.contains(&StatusCode::CREATED), "{statuses:?}");
    let again = pay().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let started = app
        .event_types(&showtime)
        .await
        .iter()
        .filter(|t| *t == "PaymentStarted")
        .count();
    assert_eq!(started, 1, "one charge only");
}

#[tokio::test]
async fn keys_of_different_users_do_not_collide() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    for (token, seat) in [(&ann, "A1"), (&bob, "A2")] {
        let r = app
            .client
            .post(app.url("/v1/reservations"))
            .bearer_auth(token)
            .header("idempotency-key", "same-key")
            .json(&json!({"showtime_id": showtime, "seats": [seat]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}
