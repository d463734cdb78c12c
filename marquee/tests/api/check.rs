//! The invariant checker: silent on an honest history, loud on each kind of broken promise.

use crate::helpers::*;
use marquee::check::check;
use marquee_test_support::{append, event};
use serde_json::{json, Value};
use std::time::Duration;

async fn violations(app: &TestApp) -> Vec<String> {
    check(&app.pool, Some(Duration::from_secs(30)), &|_, _| {})
        .await
        .unwrap()
        .violations
}

/// A history with holds, a declined and a good payment, a release and a cancellation.
async fn busy_history(app: &TestApp) -> String {
    let admin = app.admin().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1", "A2"]).await;
    problem(
        app.pay(&ann, &hold, "4000000000000002").await,
        402,
        "payment-declined",
    )
    .await;
    assert_eq!(app.pay(&ann, &hold, "4242424242424242").await.status(), 201);
    let other = app.hold_id(&bob, &showtime, &["B1"]).await;
    let r = app
        .delete(&format!("/v1/reservations/{other}"), Some(&bob))
        .await;
    assert_eq!(r.status(), 204);
    let second = app.showtime().await;
    let hold = app.hold_id(&bob, &second, &["A1"]).await;
    assert_eq!(app.pay(&bob, &hold, "4242424242424242").await.status(), 201);
    let r = app
        .delete(&format!("/v1/showtimes/{second}"), Some(&admin))
        .await;
    assert_eq!(r.status(), 204);
    showtime
}

#[tokio::test]
async fn an_honest_history_passes_every_check() {
    let app = spawn_app().await;
    busy_history(&app).await;
    app.settle().await;
    let findings = check(&app.pool, Some(Duration::from_secs(30)), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(findings.violations, Vec::<String>::new());
    assert!(findings.read_models_checked);
    assert_eq!(findings.showtimes, 2);
    assert_eq!(findings.tickets, 3);
    assert_eq!(findings.unknown_to_processor, 0);
}

#[tokio::test]
async fn a_seat_sold_twice_is_found() {
    let app = spawn_app().await;
    let showtime = busy_history(&app).await;
    app.settle().await;
    // Forge a second sale of A1 into the log, as a broken writer might have: the first sale
    // again, with tickets of its own, as the showtime's next event.
    let (sequence, version, mut payload, metadata): (i64, String, Value, Value) = sqlx::query_as(
        "select (select max(sequence) + 1 from events where aggregate_id = $1),
                event_version, payload, metadata
         from events where aggregate_id = $1 and event_type = 'TicketsIssued'",
    )
    .bind(&showtime)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    for ticket in payload["TicketsIssued"]["tickets"].as_array_mut().unwrap() {
        ticket["ticket_id"] = json!(uuid::Uuid::new_v4());
    }
    let mut second_sale = event(
        "Showtime",
        &showtime,
        sequence,
        "TicketsIssued",
        &version,
        payload,
    );
    second_sale.metadata = metadata;
    append(&app.pool, &[second_sale]).await;
    let found = check(&app.pool, None, &|_, _| {}).await.unwrap().violations;
    assert!(
        found.iter().any(|v| v.contains("seat A1 sold twice")),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_charge_without_tickets_or_refund_is_found() {
    let app = spawn_app().await;
    busy_history(&app).await;
    app.settle().await;
    sqlx::query(
        "insert into test_processor_charges (payment_id, amount, currency, outcome)
         values (gen_random_uuid(), 1250, 'EUR', 'charged')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let found = violations(&app).await;
    assert!(
        found
            .iter()
            .any(|v| v.contains("the processor charged 1250 but the log has neither")),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_refund_the_log_never_recorded_is_found() {
    let app = spawn_app().await;
    busy_history(&app).await;
    app.settle().await;
    sqlx::query(
        "insert into test_processor_refunds (refund_id, payment_id, amount, currency)
         select payment_id::text, payment_id, amount, currency from test_processor_charges
         where outcome = 'charged' limit 1",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let found = violations(&app).await;
    assert!(
        found.iter().any(|v| v.contains("the log records None")),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_read_model_that_drifted_from_the_log_is_found() {
    let app = spawn_app().await;
    busy_history(&app).await;
    app.settle().await;
    sqlx::query("update seats_view set ticket_id = null where ticket_id is not null")
        .execute(&app.pool)
        .await
        .unwrap();
    let found = violations(&app).await;
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("read model seats_view: ")),
        "{found:?}"
    );
}
