//! Fault tests against the real `marquee` binary, real PostgreSQL and real NATS: processes
//! killed with SIGKILL mid-load, PostgreSQL stopped under load, NATS wiped. After each, every
//! acknowledged hold and ticket must still be there and `marquee check`'s invariants hold.
//!
//! `FAULT_SECONDS` sets how long each load runs (default 6; `scripts/faults` runs longer).

mod harness;

use harness::*;
use marquee_test_support::fresh_database_url;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn load_seconds() -> u64 {
    std::env::var("FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// Starts the load in the background; returns the flag that stops it and its result.
fn start_load(
    base: &str,
    showtimes: &[String],
    tokens: &[String],
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Acked>) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(book_until(
        base.to_owned(),
        showtimes.to_vec(),
        tokens.to_vec(),
        stop.clone(),
    ));
    (stop, load)
}

#[tokio::test]
async fn killing_the_engine_mid_load_loses_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let mut engine = Engine::new(&fresh_database_url(), "nats://127.0.0.1:4222");
    engine.start_ready().await;
    let showtimes = catalog(&engine.base, 3).await;
    let tokens = customers(&engine.base, 16).await;
    let (stop, load) = start_load(&engine.base, &showtimes, &tokens);
    let seconds = load_seconds();
    // Several kills, each landing wherever the load happens to be: mid-append, mid-charge
    // (the test processor answers 300 ms after charging), mid-projection.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(seconds * 1000 / 3)).await;
        engine.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        engine.start_ready().await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked.holds.len() > 20, "the load did too little: {acked:?}");
    assert!(!acked.tickets.is_empty(), "no payment went through");
    assert_acked_kept(&engine.base, &acked).await;
    assert_invariants(engine.database_url()).await;
}

#[tokio::test]
async fn a_projector_killed_mid_batch_neither_loses_nor_repeats_an_event() {
    let _serial = SERIAL.lock().await;
    let mut api = Engine::new(&fresh_database_url(), "nats://127.0.0.1:4222");
    api.args = vec!["api".into()];
    api.start_ready().await;
    let mut relay = api.sibling(&["relay"]);
    relay.start();
    let mut projector = api.sibling(&["projector"]);
    projector.start();
    let showtimes = catalog(&api.base, 2).await;
    let tokens = customers(&api.base, 12).await;
    let (stop, load) = start_load(&api.base, &showtimes, &tokens);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(load_seconds() * 1000 / 4)).await;
        projector.kill9();
        relay.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        projector.start();
        relay.start();
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked.holds.len() > 20, "the load did too little: {acked:?}");
    assert_acked_kept(&api.base, &acked).await;
    assert_invariants(api.database_url()).await;
}

#[tokio::test]
async fn postgres_down_mid_load_answers_503_and_the_engine_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let postgres = PrivatePostgres::start();
    let mut engine = Engine::new(&postgres.url("marquee"), "nats://127.0.0.1:4222");
    engine.start_ready().await;
    let showtimes = catalog(&engine.base, 2).await;
    let tokens = customers(&engine.base, 12).await;
    let (stop, load) = start_load(&engine.base, &showtimes, &tokens);
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.down();
    // While the database is down the API answers at once, with 503s.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = client
        .post(format!("{}/v1/reservations", engine.base))
        .bearer_auth(&tokens[0])
        .json(&serde_json::json!({"showtime_id": showtimes[0], "seats": ["J10"]}))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    let ready = client
        .get(format!("{}/readyz", engine.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.up();
    // No restart: the engine finds its database again.
    eventually(
        "the engine did not recover",
        Duration::from_secs(30),
        || async {
            client
                .get(format!("{}/readyz", engine.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    let server_errors = acked
        .statuses
        .iter()
        .filter(|s| s.is_some_and(|s| s >= 500 && s != 503))
        .count();
    assert_eq!(
        server_errors, 0,
        "answers other than 503 while the database was down"
    );
    assert!(
        acked.statuses.contains(&Some(503)),
        "the load never saw the outage"
    );
    let after = acked.holds.len();
    assert!(after > 10, "the load did too little: {acked:?}");
    assert_acked_kept(&engine.base, &acked).await;
    assert_invariants(engine.database_url()).await;
}

#[tokio::test]
async fn nats_wiped_mid_load_is_refilled_from_the_log_and_read_models_converge() {
    let _serial = SERIAL.lock().await;
    let mut nats = PrivateNats::start();
    let mut engine = Engine::new(&fresh_database_url(), &nats.url());
    engine.start_ready().await;
    let showtimes = catalog(&engine.base, 2).await;
    let tokens = customers(&engine.base, 12).await;
    let (stop, load) = start_load(&engine.base, &showtimes, &tokens);
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.down_and_wipe();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.up();
    tokio::time::sleep(Duration::from_secs(load_seconds())).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked.holds.len() > 20, "the load did too little: {acked:?}");
    assert_acked_kept(&engine.base, &acked).await;
    assert_invariants(engine.database_url()).await;
    // The new stream holds the whole log again, republished from the start.
    let pool = sqlx::PgPool::connect(engine.database_url()).await.unwrap();
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let namespace = &engine
        .env
        .iter()
        .find(|(k, _)| k == "MARQUEE_NAMESPACE")
        .unwrap()
        .1;
    let mut stream = js.get_stream(format!("{namespace}-events")).await.unwrap();
    for _ in 0..300 {
        if stream.info().await.unwrap().state.messages as i64 >= events {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream was not refilled with the {events} events of the log within 30 s");
}

/// Sets (or replaces) one environment variable of an engine's settings.
fn set(engine: &mut Engine, name: &str, value: &str) {
    engine.env.retain(|(k, _)| k != name);
    engine.env.push((name.to_owned(), value.to_owned()));
}

/// Holds one seat and pays for it with a good card; returns the payment's answer.
async fn hold_and_pay(engine: &Engine) -> reqwest::Response {
    let showtimes = catalog(&engine.base, 1).await;
    let token = customers(&engine.base, 1).await.remove(0);
    let client = reqwest::Client::new();
    let hold: serde_json::Value = client
        .post(format!("{}/v1/reservations", engine.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"showtime_id": showtimes[0], "seats": ["A1"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    client
        .post(format!("{}/v1/tickets", engine.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reservation_id": hold["id"],
            "payment": {"card_number": "4242424242424242"}}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_slow_payment_started_inside_the_hold_issues_tickets_and_one_too_late_is_refunded() {
    let _serial = SERIAL.lock().await;
    // The processor answers after 2.5 s; the hold lasts 2 s. Started inside the hold, the
    // payment pins it and gets its tickets.
    let mut engine = Engine::new(&fresh_database_url(), "nats://127.0.0.1:4222");
    set(&mut engine, "MARQUEE_HOLD_SECONDS", "2");
    set(&mut engine, "MARQUEE_PAYMENT_LATENCY_MS", "2500");
    set(&mut engine, "MARQUEE_PAYMENT_TIMEOUT_MS", "10000");
    engine.start_ready().await;
    let paid = hold_and_pay(&engine).await;
    assert_eq!(paid.status(), 201, "{:?}", paid.text().await);
    assert_invariants(engine.database_url()).await;
    drop(engine);

    // Now the pin runs out (1 s) before the processor answers: the charge is refunded, once.
    let mut engine = Engine::new(&fresh_database_url(), "nats://127.0.0.1:4222");
    set(&mut engine, "MARQUEE_HOLD_SECONDS", "2");
    set(&mut engine, "MARQUEE_PAYMENT_PIN_SECONDS", "1");
    set(&mut engine, "MARQUEE_PAYMENT_LATENCY_MS", "2500");
    set(&mut engine, "MARQUEE_PAYMENT_TIMEOUT_MS", "10000");
    engine.start_ready().await;
    let late = hold_and_pay(&engine).await;
    assert_eq!(late.status(), 410, "{:?}", late.text().await);
    assert_invariants(engine.database_url()).await;
    let pool = sqlx::PgPool::connect(engine.database_url()).await.unwrap();
    let (charged, refunded): (i64, i64) = sqlx::query_as(
        "select (select coalesce(sum(amount), 0) from test_processor_charges)::bigint,
                (select coalesce(sum(amount), 0) from test_processor_refunds)::bigint",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(charged > 0);
    assert_eq!(charged, refunded);
}
