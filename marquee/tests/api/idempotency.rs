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

/// Rows the idempotency layer has stored.
async fn remembered(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_on_a_seat_map_stream_is_ignored_and_the_stream_flows() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let first_event = async {
        let mut response = app
            .client
            .get(app.url(&format!("/v1/showtimes/{showtime}/seats/stream")))
            .header("idempotency-key", "stream-1")
            .send()
            .await
            .unwrap();
        response
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open")
    };
    // Buffering the answer to remember it would wait for a stream that never ends.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), first_event)
        .await
        .expect("the stream's first event arrives");
    assert!(String::from_utf8_lossy(&first).contains("snapshot"));
    assert_eq!(remembered(&app).await, 0);
}

#[tokio::test]
async fn keys_on_reads_logins_and_refused_callers_store_nothing() {
    let app = spawn_app().await;
    let ann = app.customer().await;
    for i in 0..5 {
        let r = app
            .client
            .get(app.url("/openapi.json"))
            .header("idempotency-key", format!("read-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("idempotent-replayed").is_none());
    }
    let login = || {
        app.client
            .post(app.url("/v1/auth/token"))
            .header("idempotency-key", "login-1")
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
    };
    let (first, second) = (login().await.unwrap(), login().await.unwrap());
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    assert!(second.headers().get("idempotent-replayed").is_none());
    // A customer on an admin route, and no token on a customer route: refused, not kept.
    let theater = app
        .client
        .post(app.url("/v1/movies"))
        .bearer_auth(&ann)
        .header("idempotency-key", "movie-1")
        .json(&json!({"title": "Heat", "runtime_minutes": 170}))
        .send()
        .await
        .unwrap();
    problem(theater, 403, "forbidden").await;
    let anonymous = app
        .client
        .post(app.url("/v1/reservations"))
        .header("idempotency-key", "hold-1")
        .json(&json!({"showtime_id": uuid::Uuid::nil(), "seats": ["A1"]}))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "unauthenticated").await;
    assert_eq!(remembered(&app).await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_is_read_or_kept() {
    let app = spawn_app().await;
    let ann = app.customer().await;
    let big =
        json!({"showtime_id": uuid::Uuid::nil(), "seats": ["A1"], "pad": "x".repeat(200 * 1024)});
    let r = app
        .client
        .post(app.url("/v1/reservations"))
        .bearer_auth(&ann)
        .header("idempotency-key", "big-1")
        .json(&big)
        .send()
        .await
        .unwrap();
    problem(r, 413, "payload-too-large").await;
    assert_eq!(remembered(&app).await, 0);
}

#[tokio::test]
async fn a_registration_key_is_scoped_to_its_request_so_no_one_else_gets_its_answer() {
    let app = spawn_app().await;
    let register = |email: &str| {
        app.client
            .post(app.url("/v1/users"))
            .header("idempotency-key", "signup")
            .json(&json!({"email": email, "password": "correct horse", "name": "Ann"}))
            .send()
    };
    let first = register("ann@example.com").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = register("ann@example.com").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // Another client with the same key: its own registration, never Ann's answer.
    let other = register("bob@example.com").await.unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert!(other.headers().get("idempotent-replayed").is_none());
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["email"], "bob@example.com");
    let scopes: Vec<uuid::Uuid> = sqlx::query_scalar("select scope from idempotency_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(scopes.len(), 2);
    assert!(scopes.iter().all(|s| !s.is_nil()));
}
