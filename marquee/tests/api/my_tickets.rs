//! A customer's ticket list, a page at a time: every ticket once, in the documented order
//! (upcoming soonest first, then past latest first), however the pages fall.

use crate::helpers::{prices, problem, spawn_app, TestApp};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A showtime of `movie` in `theater`'s only screen.
async fn showtime_at(
    app: &TestApp,
    admin: &str,
    theater: &Value,
    movie: &str,
    at: DateTime<Utc>,
) -> String {
    let r = app
        .post(
            "/v1/showtimes",
            Some(admin),
            &json!({
                "movie_id": movie, "theater_id": theater["id"],
                "screen_id": theater["screens"][0]["id"], "starts_at": at, "prices": prices(),
            }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .expect("a showtime id")
        .to_owned()
}

/// Moves a showtime in the read model the ticket list is served from, as time passing would
/// (a showtime cannot be scheduled in the past).
async fn starts_in(app: &TestApp, showtime: &str, from_now: TimeDelta) {
    sqlx::query("update showtimes_view set starts_at = $2 where id = $1::uuid")
        .bind(showtime)
        .bind(Utc::now() + from_now)
        .execute(&app.pool)
        .await
        .unwrap();
}

/// Four showtimes a day apart with tickets bought by one customer: 3, 2, 2 and 1 seats.
async fn customer_with_tickets(app: &TestApp) -> (String, Vec<String>) {
    let admin = app.admin().await;
    let theater = app.theater(&admin, &["ssss"]).await;
    let movie = app.movie(&admin).await;
    let ann = app.customer().await;
    let mut showtimes = Vec::new();
    for (day, seats) in [
        (1, &["A1", "A2", "A3"][..]),
        (2, &["A1", "A2"]),
        (3, &["A1", "A2"]),
        (4, &["A1"]),
    ] {
        let at = Utc::now() + TimeDelta::days(day);
        let showtime = showtime_at(app, &admin, &theater, &movie, at).await;
        let hold = app.hold_id(&ann, &showtime, seats).await;
        let paid = app.pay(&ann, &hold, "4242424242424242").await;
        assert_eq!(paid.status(), StatusCode::CREATED);
        showtimes.push(showtime);
    }
    app.settle().await;
    (ann, showtimes)
}

/// Every page from `query` on, following `next_after`; checks each page's size.
async fn all_pages(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let path = format!("/v1/users/me/tickets?limit={limit}{query}{cursor}");
        let r = app.get(&path, Some(token)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        let page = body["tickets"].as_array().expect("a tickets array").clone();
        assert!(page.len() <= limit, "{body}");
        after = body["next_after"].as_str().map(str::to_owned);
        let last = after.is_none();
        assert!(
            last || page.len() == limit,
            "only the last page is short: {body}"
        );
        pages.push(page);
        assert!(pages.len() < 20, "next_after leads somewhere new");
        if last {
            return pages;
        }
    }
}

/// (showtime index, seat) of each ticket.
fn places(tickets: &[Value], showtimes: &[String]) -> Vec<(usize, String)> {
    tickets
        .iter()
        .map(|t| {
            let showtime = showtimes.iter().position(|s| t["showtime_id"] == **s);
            (
                showtime.expect("one of ours"),
                t["seat"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn expected(list: &[(usize, &str)]) -> Vec<(usize, String)> {
    list.iter()
        .map(|(s, seat)| (*s, seat.to_string()))
        .collect()
}

#[tokio::test]
async fn pages_of_tickets_together_list_every_ticket_once_in_the_documented_order() {
    let app = spawn_app().await;
    let (ann, showtimes) = customer_with_tickets(&app).await;
    // The last two are over: the 4th two days ago, the 3rd one day ago.
    starts_in(&app, &showtimes[2], TimeDelta::days(-1)).await;
    starts_in(&app, &showtimes[3], TimeDelta::days(-2)).await;
    let in_order = expected(&[
        (0, "A1"),
        (0, "A2"),
        (0, "A3"),
        (1, "A1"),
        (1, "A2"), // upcoming, soonest first
        (2, "A1"),
        (2, "A2"),
        (3, "A1"), // past, latest first
    ]);

    let pages = all_pages(&app, &ann, "", 3).await;
    assert_eq!(pages.len(), 3, "8 tickets in pages of 3");
    assert_eq!(places(&pages.concat(), &showtimes), in_order);
    let one_page = all_pages(&app, &ann, "", 50).await;
    assert_eq!(one_page.len(), 1);
    assert_eq!(places(&one_page[0], &showtimes), in_order);

    let past = all_pages(&app, &ann, "&status=past", 1).await;
    assert_eq!(places(&past.concat(), &showtimes), in_order[5..].to_vec());
    let upcoming = all_pages(&app, &ann, "&status=upcoming", 2).await;
    assert_eq!(
        places(&upcoming.concat(), &showtimes),
        in_order[..5].to_vec()
    );
}

#[tokio::test]
async fn a_showtime_starting_while_the_customer_pages_keeps_its_place() {
    let app = spawn_app().await;
    let (ann, showtimes) = customer_with_tickets(&app).await;
    starts_in(&app, &showtimes[0], TimeDelta::milliseconds(1500)).await;
    let first = app
        .get("/v1/users/me/tickets?limit=2", Some(&ann))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let after = first["next_after"]
        .as_str()
        .expect("more to come")
        .to_owned();
    // The first showtime starts between the two pages.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let rest = all_pages(&app, &ann, &format!("&after={after}"), 50).await;
    let mut listed = first["tickets"].as_array().unwrap().clone();
    listed.extend(rest.concat());
    assert_eq!(
        places(&listed, &showtimes),
        expected(&[
            (0, "A1"),
            (0, "A2"),
            (0, "A3"),
            (1, "A1"),
            (1, "A2"),
            (2, "A1"),
            (2, "A2"),
            (3, "A1"),
        ]),
        "the listing goes on as it began"
    );
}

#[tokio::test]
async fn a_bad_page_size_or_cursor_is_refused() {
    let app = spawn_app().await;
    let ann = app.customer().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("after=nonsense", "after"),
        ("after=01", "after"),
    ] {
        let r = app
            .get(&format!("/v1/users/me/tickets?{query}"), Some(&ann))
            .await;
        let body = problem(r, 422, "validation-failed").await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    let r = app.get("/v1/users/me/tickets?limit=200", Some(&ann)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tickets": []}),
        "no next_after on the last page"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_pages() {
    let app = spawn_app().await;
    let doc = app.get_now("/openapi.json").await;
    let operation = &doc["paths"]["/v1/users/me/tickets"]["get"];
    let params: Vec<&str> = operation["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["status", "limit", "after"], "{operation}");
    let list = &doc["components"]["schemas"]["TicketList"];
    assert!(list["properties"]["next_after"].is_object(), "{list}");
    assert_eq!(list["required"], json!(["tickets"]), "{list}");
}
