//! Money and the card processor: a charge whose answer never came is found and recorded, and
//! every refund the log records reaches the processor exactly once.

use crate::helpers::*;
use marquee_payments::processor::TestCardProcessor;
use marquee_payments::reconcile;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;

/// Polls `check` every 100 ms until it holds; panics with `what` after 20 seconds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within 20 seconds");
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_charge_whose_answer_times_out_is_settled_by_asking_the_processor() {
    let mut config = test_config(&fresh_database_url());
    config.payment_latency = Duration::from_millis(1500);
    config.payment_timeout = Duration::from_millis(200);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1", "A2"]).await;

    let r = app.pay(&ann, &hold, "4242424242424242").await;
    let retry_after = r.headers()["retry-after"].to_str().unwrap().to_owned();
    let body = problem(r, 503, "payment-pending").await;
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    assert!(body["detail"].as_str().unwrap().contains("paying"));
    // Nothing is recorded as failed: the card was charged, and the seats stay pinned.
    let reservation = format!("/v1/reservations/{hold}");
    let r: Value = app
        .get(&reservation, Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "paying");
    problem(
        app.hold(&bob, &showtime, &["A1"]).await,
        409,
        "seats-unavailable",
    )
    .await;

    eventually("the reconciler did not record the charge", || async {
        let r: Value = app
            .get(&reservation, Some(&ann))
            .await
            .json()
            .await
            .unwrap();
        r["status"] == "confirmed"
    })
    .await;
    let types = app.event_types(&showtime).await;
    assert_eq!(
        types.iter().filter(|t| *t == "TicketsIssued").count(),
        1,
        "{types:?}"
    );
    assert!(!types.contains(&"PaymentFailed".to_owned()), "{types:?}");
    let tickets: Value = app
        .get("/v1/users/me/tickets", Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tickets["tickets"].as_array().unwrap().len(), 2);
    assert_eq!(
        count(&app.pool, "select count(*) from test_processor_charges").await,
        1
    );
    assert_eq!(
        count(&app.pool, "select count(*) from payments_in_flight").await,
        0
    );
}

#[tokio::test]
async fn a_payment_the_processor_never_received_is_recorded_as_failed_and_the_hold_can_pay_again() {
    let mut config = test_config(&fresh_database_url());
    config.payment_latency = Duration::from_millis(1500);
    config.payment_timeout = Duration::from_millis(200);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        503,
        "payment-pending",
    )
    .await;
    // As if the charge had been lost on its way: the processor has no record of it.
    sqlx::query("delete from test_processor_charges")
        .execute(&app.pool)
        .await
        .unwrap();
    let reservation = format!("/v1/reservations/{hold}");
    eventually("the reconciler did not record the failure", || async {
        let r: Value = app
            .get(&reservation, Some(&ann))
            .await
            .json()
            .await
            .unwrap();
        r["status"] == "held"
    })
    .await;
    let failed = &app.events("event_type=PaymentFailed").await[0];
    assert_eq!(failed["payload"]["reason"], "processor_unavailable");
}

#[tokio::test]
async fn a_refund_recorded_in_the_log_reaches_the_processor_once() {
    let mut config = test_config(&fresh_database_url());
    config.payment_pin = Duration::from_millis(300);
    config.payment_latency = Duration::from_millis(800);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        410,
        "reservation-expired",
    )
    .await;
    eventually("the refund was not paid", || async {
        count(&app.pool, "select count(*) from refunds_due").await == 0
    })
    .await;
    let (refunds, amount): (i64, i64) = sqlx::query_as(
        "select count(*), sum(r.amount)::bigint from test_processor_refunds r
         join test_processor_charges c using (payment_id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refunds, 1);
    let charged: i64 = sqlx::query_scalar("select amount from test_processor_charges")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(amount, charged);
    // Paying it again (another process's pass, a retry) moves no more money.
    let processor = TestCardProcessor {
        pool: app.pool.clone(),
        latency: Duration::ZERO,
        transit: Duration::ZERO,
    };
    sqlx::query("insert into refunds_due (refund_id, payment_id, amount, currency, recorded_at, due_at)
                 select refund_id, payment_id, amount, currency, now(), now() from test_processor_refunds")
        .execute(&app.pool)
        .await
        .unwrap();
    reconcile::pay_refunds(&app.pool, &processor).await.unwrap();
    assert_eq!(
        count(&app.pool, "select count(*) from test_processor_refunds").await,
        1
    );
}

#[tokio::test]
async fn cancelling_a_showtime_pays_back_every_ticket() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1", "A2"]).await;
    assert_eq!(app.pay(&ann, &hold, "4242424242424242").await.status(), 201);
    let r = app
        .delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    assert_eq!(r.status(), 204);
    eventually("the ticket refunds were not paid", || async {
        count(&app.pool, "select count(*) from test_processor_refunds").await == 2
    })
    .await;
    let (charged, refunded): (i64, i64) = sqlx::query_as(
        "select (select sum(amount) from test_processor_charges)::bigint,
                (select sum(amount) from test_processor_refunds)::bigint",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(charged, refunded);
    assert_eq!(
        count(&app.pool, "select count(*) from refunds_due").await,
        0
    );
}

#[tokio::test]
async fn a_refund_the_processor_refuses_stays_due_with_its_error_and_backs_off() {
    // No engine running: this pass is the only one.
    let pool = marquee_test_support::fresh_database().await;
    let processor = TestCardProcessor {
        pool: pool.clone(),
        latency: Duration::ZERO,
        transit: Duration::ZERO,
    };
    // A refund for a charge the processor never made.
    sqlx::query(
        "insert into refunds_due (refund_id, payment_id, amount, currency, recorded_at, due_at)
         values ('r1', gen_random_uuid(), 1200, 'EUR', now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(reconcile::pay_refunds(&pool, &processor).await.unwrap(), 0);
    let (attempts, error, later): (i32, String, bool) = sqlx::query_as(
        "select attempts, last_error, due_at > now() from refunds_due where refund_id = 'r1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.contains("no_such_charge"), "{error}");
    assert!(later, "a refused refund waits before the next attempt");
}

/// The invariant checker's findings on the log and the processor (read models skipped).
async fn money_violations(app: &TestApp) -> Vec<String> {
    marquee::check::check(&app.pool, None, &|_, _| {})
        .await
        .unwrap()
        .violations
}

async fn charged(pool: &PgPool) -> i64 {
    count(
        pool,
        "select count(*) from test_processor_charges where outcome = 'charged'",
    )
    .await
}

#[tokio::test]
async fn a_reconciler_with_a_shorter_timeout_never_settles_a_charge_another_process_waits_on() {
    // Process A charges and waits 10 s for the answer; the charge takes 5 s to arrive.
    let mut a = test_config(&fresh_database_url());
    a.payment_timeout = Duration::from_secs(10);
    a.payment_transit = Duration::from_secs(5);
    let app = spawn_with(a.clone()).await;
    // Process B, on the same database, gives charges 200 ms: its reconciler would ask the
    // processor about A's payment after about two seconds, before the charge got there.
    let mut b = a;
    b.payment_timeout = Duration::from_millis(200);
    b.namespace.push('b');
    let _b = spawn_with(b).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    let r = app.pay(&ann, &hold, "4242424242424242").await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tickets"].as_array().unwrap().len(), 1, "{body}");
    let types = app.event_types(&showtime).await;
    assert!(!types.contains(&"PaymentFailed".to_owned()), "{types:?}");
    assert_eq!(money_violations(&app).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_charge_still_on_its_way_when_its_sender_gives_up_is_voided_and_never_taken() {
    let mut config = test_config(&fresh_database_url());
    config.payment_timeout = Duration::from_millis(300);
    config.payment_transit = Duration::from_secs(4);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        503,
        "payment-pending",
    )
    .await;
    // The reconciler finds no charge at the processor after about 2.3 s, voids the payment
    // and records it as failed; the charge arrives at 4 s, too late to be taken.
    let reservation = format!("/v1/reservations/{hold}");
    eventually("the reconciler did not record the failure", || async {
        let r: Value = app
            .get(&reservation, Some(&ann))
            .await
            .json()
            .await
            .unwrap();
        r["status"] == "held"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(charged(&app.pool).await, 0, "a voided payment was charged");
    assert_eq!(money_violations(&app).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_payment_that_waited_in_a_busy_showtimes_queue_is_not_settled_while_it_is_charged() {
    let mut config = test_config(&fresh_database_url());
    config.payment_timeout = Duration::from_secs(5);
    config.payment_transit = Duration::from_millis(1500);
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    // Appends wait 8 s, as behind a long queue: the payment is recorded as started at the
    // time its request came, 8 s before the charge is sent, longer than timeout and grace.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("lock table events in share mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        blocker.commit().await.unwrap();
    });
    let r = app.pay(&ann, &hold, "4242424242424242").await;
    release.await.unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tickets"].as_array().unwrap().len(), 1, "{body}");
    let types = app.event_types(&showtime).await;
    assert!(!types.contains(&"PaymentFailed".to_owned()), "{types:?}");
    assert_eq!(money_violations(&app).await, Vec::<String>::new());
}

#[tokio::test]
async fn payments_the_reconciler_keeps_failing_on_back_off_and_never_hold_up_the_others() {
    let mut config = test_config(&fresh_database_url());
    config.payment_latency = Duration::from_millis(1500);
    config.payment_timeout = Duration::from_millis(200);
    let app = spawn_with(config).await;
    // More stale payments than one pass takes, each of a showtime that does not exist, so
    // recording any outcome for them fails every time.
    sqlx::query(
        "insert into payments_in_flight
             (payment_id, showtime_id, reservation_id, started_at, pinned_until, recorded_at)
         select gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
                now() - interval '1 hour', now() + interval '1 hour', now() - interval '1 hour'
         from generate_series(1, 150)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold = app.hold_id(&ann, &showtime, &["A1"]).await;
    problem(
        app.pay(&ann, &hold, "4242424242424242").await,
        503,
        "payment-pending",
    )
    .await;
    let reservation = format!("/v1/reservations/{hold}");
    eventually("the good payment waited behind failing ones", || async {
        let r: Value = app
            .get(&reservation, Some(&ann))
            .await
            .json()
            .await
            .unwrap();
        r["status"] == "confirmed"
    })
    .await;
    let (failing, backing_off): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where attempts >= 1 and retry_at is not null
                                           and last_error is not null)
         from payments_in_flight",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(failing, 150);
    assert_eq!(
        backing_off, 150,
        "each failing payment waits its own back-off"
    );
}
