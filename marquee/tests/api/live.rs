//! The live seat map (`GET /v1/showtimes/{id}/seats/stream`) and the web pages that use it.

use crate::helpers::{problem, spawn_app};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Reads Server-Sent Events off a response, one `(event, data)` at a time.
struct Events {
    response: Response,
    buffer: String,
}

impl Events {
    async fn open(app: &crate::helpers::TestApp, showtime: &str) -> Self {
        let response = app
            .client
            .get(app.url(&format!("/v1/showtimes/{showtime}/seats/stream")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, failing the test if none comes within `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    return (event, serde_json::from_str(&data).unwrap());
                }
                continue; // a heartbeat comment
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The statuses of the next `n` seat events, by seat.
    async fn seats(&mut self, n: usize, within: Duration) -> Vec<(String, String)> {
        let mut seen = vec![];
        while seen.len() < n {
            let (event, data) = self.next(within).await;
            assert_eq!(event, "seat", "{data}");
            seen.push((
                data["seat"].as_str().unwrap().to_owned(),
                data["status"].as_str().unwrap().to_owned(),
            ));
        }
        seen.sort();
        seen
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect()
}

#[tokio::test]
async fn a_seat_map_stream_starts_with_the_whole_map_including_earlier_holds() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    app.held(&ann, &showtime, &["A1"]).await;

    let mut events = Events::open(&app, &showtime).await;
    let (event, snapshot) = events.next(Duration::from_secs(5)).await;

    assert_eq!(event, "snapshot");
    assert_eq!(snapshot["showtime_id"], showtime.as_str());
    assert_eq!(
        (snapshot["held"].as_u64(), snapshot["available"].as_u64()),
        (Some(1), Some(23))
    );
    let a1 = &snapshot["rows"][0]["seats"][0];
    assert_eq!(
        (a1["seat"].as_str(), a1["status"].as_str()),
        (Some("A1"), Some("held"))
    );
    assert_eq!(a1["kind"], "standard");
    assert_eq!(a1["price"]["amount"], 1250);
    assert!(snapshot["sequence"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn another_customers_hold_reaches_a_watcher_within_a_second() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let mut events = Events::open(&app, &showtime).await;
    events.next(Duration::from_secs(5)).await; // the snapshot
    let bob = app.customer().await;

    let held_at = Instant::now();
    app.held(&bob, &showtime, &["B3", "B4"]).await;
    let seen = events.seats(2, Duration::from_secs(1)).await;

    assert_eq!(seen, pairs(&[("B3", "held"), ("B4", "held")]));
    assert!(
        held_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        held_at.elapsed()
    );
}

#[tokio::test]
async fn releases_and_sales_are_streamed_seat_by_seat() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let mut events = Events::open(&app, &showtime).await;
    events.next(Duration::from_secs(5)).await;
    let ann = app.customer().await;
    let wait = Duration::from_secs(5);

    // A new hold on the same showtime releases her first one: C1 is free again, C2 held.
    app.held(&ann, &showtime, &["C1"]).await;
    assert_eq!(events.seats(1, wait).await, pairs(&[("C1", "held")]));
    let second = app.held(&ann, &showtime, &["C2"]).await;
    assert_eq!(
        events.seats(2, wait).await,
        pairs(&[("C1", "available"), ("C2", "held")])
    );
    let declined = app
        .pay(&ann, second["id"].as_str().unwrap(), "4000000000000002")
        .await;
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    let paid = app
        .pay(&ann, second["id"].as_str().unwrap(), "4242424242424242")
        .await;
    assert_eq!(paid.status(), StatusCode::CREATED);

    // A declined card changes no seat, so the next seat event is the sale.
    assert_eq!(events.seats(1, wait).await, pairs(&[("C2", "sold")]));
}

#[tokio::test]
async fn a_cancelled_showtime_frees_its_seats_and_says_so() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    app.held(&ann, &showtime, &["A2"]).await;
    let mut events = Events::open(&app, &showtime).await;
    events.next(Duration::from_secs(5)).await;

    let admin = app.admin().await;
    let r = app
        .delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // `cancelled` comes with the cancellation, the freed seat with the release recorded
    // right after it by the same command.
    let wait = Duration::from_secs(5);
    let mut seen = [events.next(wait).await, events.next(wait).await];
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen[0].0, "cancelled");
    assert_eq!(seen[0].1["showtime_id"], showtime.as_str());
    assert_eq!(
        (seen[1].0.as_str(), &seen[1].1["seat"]),
        ("seat", &Value::from("A2"))
    );
    assert_eq!(seen[1].1["status"], "available");
}

#[tokio::test]
async fn the_stream_of_an_unknown_showtime_is_not_found() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url(&format!(
            "/v1/showtimes/{}/seats/stream",
            uuid::Uuid::now_v7()
        )))
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
}

#[tokio::test]
async fn the_web_pages_are_served_with_their_own_content_security_policy() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let etag = page.headers()["etag"].clone();
    assert!(page.text().await.unwrap().contains("/js/app.js"));

    let again = app
        .client
        .get(app.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let script = app
        .client
        .get(app.url("/js/seatmap.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // The API keeps its own, stricter policy.
    let api = app
        .client
        .get(app.url("/v1/theaters"))
        .send()
        .await
        .unwrap();
    assert!(api.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'; frame-ancestors"));
}

#[tokio::test]
async fn the_seat_map_stream_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app.get_now("/openapi.json").await;
    let path = &doc["paths"]["/v1/showtimes/{id}/seats/stream"]["get"];
    assert!(
        path["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{path}"
    );
    for schema in ["SeatSnapshot", "SeatChange", "ShowtimeCancelledChange"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
