//! Slow clients and slow answers: a client that trickles its request, or a request the engine
//! cannot answer in time, gives its admission slot back within the limits.

use crate::helpers::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The engine with room for one request at a time, and short limits.
async fn one_slot() -> TestApp {
    let mut config = test_config(&fresh_database_url());
    config.max_in_flight = Some(1);
    config.header_timeout = Duration::from_secs(1);
    config.body_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    config.payment_timeout = Duration::from_secs(1);
    spawn_with(config).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Sends `bytes` one every 300 ms until the server closes the connection or `for_at_most`
/// passes; returns what the server answered.
async fn trickle(mut stream: TcpStream, bytes: &[u8], for_at_most: Duration) -> String {
    let started = Instant::now();
    for b in bytes {
        if started.elapsed() > for_at_most || stream.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut answer = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_and_its_slot_comes_back_within_the_limit() {
    let app = one_slot().await;
    let mut stream = connect(&app).await;
    let head = "POST /v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let trickler = tokio::spawn(trickle(stream, &[b' '; 100], Duration::from_secs(8)));
    // The trickler holds the one slot for now...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = app.get("/v1/theaters", None).await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    // ...and gives it back once its body is late.
    let started = Instant::now();
    loop {
        if app.get("/v1/theaters", None).await.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the slot was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = trickler.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    let accounts: i64 = sqlx::query_scalar("select count(*) from accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(accounts, 1, "only the admin");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let app = one_slot().await;
    let stream = connect(&app).await;
    let started = Instant::now();
    let head = "GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let answer = trickle(stream, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection stayed open for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_answer_that_is_not_ready_in_time_is_503_and_frees_the_slot() {
    let app = one_slot().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    // Appends wait for this lock, so the hold cannot be answered within 2 s.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("lock table events in share mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), app.hold(&ann, &showtime, &["A1"]))
        .await
        .expect("an answer within the limit, not a hang");
    let waited = started.elapsed();
    let body = problem(r, 503, "overloaded").await;
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"));
    blocker.rollback().await.unwrap();
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}
