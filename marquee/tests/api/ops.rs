//! The process reporting on itself: readiness checked at most once a second however often it
//! is asked, and metrics that can be moved off the API's address.

use crate::helpers::{
    fresh_database_url, problem, spawn_app, spawn_with, spawn_with_metrics_listener, test_config,
    TestApp,
};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// Asks `/readyz` until it is 200 (NATS connects in the background), for up to 30 seconds.
async fn wait_until_ready(app: &TestApp) {
    for _ in 0..300 {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        if r.status() == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the engine was not ready within 30 seconds");
}

/// The process-wide count of readiness checks, from `/metrics`.
async fn readiness_checks(app: &TestApp) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("marquee_readiness_checks_total "))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

async fn readyz_status(app: &TestApp) -> StatusCode {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn many_readiness_calls_check_the_database_about_once_a_second() {
    let app = spawn_app().await;
    wait_until_ready(&app).await;
    let before = readiness_checks(&app).await;
    let started = Instant::now();
    let at_once = (0..200).map(|_| readyz_status(&app));
    let statuses = futures::future::join_all(at_once).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Then a steady stream for another second and a half.
    while started.elapsed() < Duration::from_millis(1500) {
        let burst = futures::future::join_all((0..20).map(|_| readyz_status(&app))).await;
        assert!(burst.iter().all(|s| *s == StatusCode::OK));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs();
    let checks = readiness_checks(&app).await - before;
    // One per started second of this test, and a few for other tests of this process that
    // ask their own engines meanwhile (the count is process-wide).
    assert!(
        checks <= seconds + 1 + 4,
        "{checks} checks in {seconds} s of calls"
    );
}

#[tokio::test]
async fn readiness_turns_503_within_about_a_second_of_losing_the_database() {
    let app = spawn_app().await;
    wait_until_ready(&app).await;
    // A closed pool fails every query at once, as a database gone away does.
    let pool = app.pool.clone();
    tokio::spawn(async move { pool.close().await });
    let lost = Instant::now();
    while readyz_status(&app).await == StatusCode::OK {
        assert!(
            lost.elapsed() < Duration::from_millis(1500),
            "still ready 1.5 s after the database went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["postgres"], false, "{body}");
}

#[tokio::test]
async fn metrics_on_their_own_address_are_served_there_and_not_on_the_api() {
    let (app, metrics) = spawn_with_metrics_listener().await;
    let healthz = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    problem(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    let r = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.contains("marquee_http_requests_total"), "{text}");
    // The metrics address serves nothing else.
    let other = app.client.get(format!("{metrics}/healthz")).send().await;
    problem(other.unwrap(), 404, "not-found").await;
}

#[tokio::test]
async fn a_configured_metrics_address_takes_metrics_off_the_api_address() {
    let mut config = test_config(&fresh_database_url());
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_with(config).await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn without_a_metrics_address_the_api_serves_metrics() {
    let app = spawn_app().await;
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("marquee_http_requests_total"), "{text}");
}
