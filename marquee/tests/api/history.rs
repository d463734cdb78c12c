//! The event history API: paging under concurrent writers, the seat map as of a past time,
//! and the story of a seat.

use crate::helpers::*;
use chrono::{DateTime, TimeDelta, Utc};
use marquee_test_support::{append, append_in, event};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Appends `events` events to the test aggregate `aggregate` in one transaction, which stays
/// open `hold_ms` before it commits.
async fn append_slowly(pool: sqlx::PgPool, aggregate: String, events: i64, hold_ms: u64) {
    let rows: Vec<_> = (1..=events)
        .map(|sequence| event("Test", &aggregate, sequence, "Happened", "1", json!({})))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    append_in(&mut tx, &rows).await;
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_while_transactions_commit_out_of_order_misses_and_repeats_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // 40 writers; each holds its transaction open for a different time, so they commit in
    // another order than they took their positions.
    let writers: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(append_slowly(
                app.pool.clone(),
                format!("agg{i}"),
                1 + i % 3,
                (37 * i % 200) as u64,
            ))
        })
        .collect();
    let expected: i64 = (0..40).map(|i| 1 + i % 3).sum();
    let mut seen = Vec::new();
    let mut after = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Page until everything was seen: a transaction open anywhere in the cluster (another
    // test's) can hold the horizon back for a while, so empty pages do not mean the end.
    while (seen.len() as i64) < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "saw only {} events",
            seen.len()
        );
        let page: Value = app
            .client
            .get(app.url(&format!(
                "/v1/events?after={after}&limit=7&aggregate_type=Test"
            )))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        for e in events {
            seen.push(e["position"].as_i64().unwrap());
        }
        after = page["next_after"].as_i64().unwrap();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let all: Vec<i64> = sqlx::query_scalar(
        "select position from events where aggregate_type = 'Test' order by position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(all.len(), (0..40).map(|i| 1 + i % 3).sum::<i64>() as usize);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
    assert_eq!(seen, all, "every event exactly once");
}

#[tokio::test]
async fn the_events_api_is_for_admins_and_filters_by_aggregate_and_type() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    app.hold(&ann, &showtime, &["A1"]).await;
    app.wait_for_history().await;
    problem(app.get("/v1/events", Some(&ann)).await, 403, "forbidden").await;
    problem(app.get("/v1/events", None).await, 401, "unauthenticated").await;
    let admin = app.admin().await;
    let page: Value = app
        .get(
            &format!("/v1/events?aggregate_id={showtime}&event_type=SeatsHeld"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["seats"], serde_json::json!(["A1"]));
    assert_eq!(events[0]["sequence"], 2);
    assert!(events[0]["metadata"]["actor"]
        .as_str()
        .unwrap()
        .starts_with("user:"));
    problem(
        app.get("/v1/events?limit=0", Some(&admin)).await,
        422,
        "validation-failed",
    )
    .await;
}

/// When each of the showtime's events of `event_type` was recorded, oldest first.
async fn recorded_at(app: &TestApp, showtime: &str, event_type: &str) -> Vec<DateTime<Utc>> {
    app.events(&format!("aggregate_id={showtime}&event_type={event_type}"))
        .await
        .iter()
        .map(|e| e["recorded_at"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn status_as_of(
    app: &TestApp,
    admin: &str,
    showtime: &str,
    at: DateTime<Utc>,
    seat: &str,
) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let r = app
        .client
        .get(app.url(&format!("/v1/showtimes/{showtime}/seats")))
        .query(&[("as_of", at)])
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    seat_status(&r.json().await.unwrap(), seat).0
}

#[tokio::test]
async fn the_seat_map_as_of_a_past_time_matches_what_happened_then() {
    let mut config = test_config(&fresh_database_url());
    config.hold_for = Duration::from_secs(2);
    let app = spawn_with(config).await;
    let admin = app.admin().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let ms = TimeDelta::milliseconds;

    let a: Value = app.held(&ann, &showtime, &["A1"]).await;
    app.hold(&bob, &showtime, &["A2"]).await;
    app.pay(&ann, a["id"].as_str().unwrap(), "4242424242424242")
        .await;
    // Read once Ann has paid: her hold lasts two seconds.
    let held = recorded_at(&app, &showtime, "SeatsHeld").await;
    let [held_a1, held_a2] = held[..] else {
        panic!("two holds: {held:?}")
    };
    let sold_a1 = recorded_at(&app, &showtime, "TicketsIssued").await[0];

    assert_eq!(
        status_as_of(&app, &admin, &showtime, held_a1 - ms(1), "A1").await,
        "available"
    );
    assert_eq!(
        status_as_of(&app, &admin, &showtime, held_a1, "A1").await,
        "held"
    );
    assert_eq!(
        status_as_of(&app, &admin, &showtime, sold_a1, "A1").await,
        "sold"
    );
    assert_eq!(
        status_as_of(&app, &admin, &showtime, held_a2, "A2").await,
        "held"
    );
    // Bob never paid: two seconds after his hold, A2 was free again.
    assert_eq!(
        status_as_of(&app, &admin, &showtime, held_a2 + ms(2001), "A2").await,
        "available"
    );

    let ann_asks = app
        .client
        .get(app.url(&format!(
            "/v1/showtimes/{showtime}/seats?as_of=2030-01-01T00:00:00Z"
        )))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    problem(ann_asks, 403, "forbidden").await;
}

#[tokio::test]
async fn a_seats_history_tells_who_held_released_and_bought_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    let first: Value = app.held(&ann, &showtime, &["B2", "B3"]).await;
    app.delete(
        &format!("/v1/reservations/{}", first["id"].as_str().unwrap()),
        Some(&ann),
    )
    .await;
    let second: Value = app.held(&bob, &showtime, &["B2"]).await;
    app.pay(&bob, second["id"].as_str().unwrap(), "4000000000000002")
        .await;
    app.pay(&bob, second["id"].as_str().unwrap(), "4242424242424242")
        .await;
    app.hold(&ann, &showtime, &["B4"]).await;

    let story: Value = app
        .get(
            &format!("/v1/showtimes/{showtime}/seats/B2/history"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = story["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "held",
            "released",
            "held",
            "payment_started",
            "payment_failed",
            "payment_started",
            "sold"
        ]
    );
    let who: HashSet<&str> = story["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["by"].as_str().unwrap())
        .collect();
    assert_eq!(who.len(), 2, "two customers, by id: {who:?}");
    assert!(who.iter().all(|w| w.starts_with("user:")));
    problem(
        app.get(
            &format!("/v1/showtimes/{showtime}/seats/Z9/history"),
            Some(&admin),
        )
        .await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_switches_over_while_serving_and_equals_a_rebuild() {
    use marquee_projections::rebuild::{differences, rebuild_into};
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let bob = app.customer().await;
    for seat in ["A1", "A2", "A3"] {
        let h: Value = app.held(&ann, &showtime, &[seat]).await;
        app.pay(&ann, h["id"].as_str().unwrap(), "4242424242424242")
            .await;
    }
    app.settle().await;
    // Readers keep reading and writers keep writing while every read model is replayed.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (client, url, stop) = (
            app.client.clone(),
            app.url(&format!("/v1/showtimes/{showtime}/seats")),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.is_cancelled() {
                let map: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                assert_eq!(
                    map["rows"].as_array().map(Vec::len),
                    Some(3),
                    "a whole seat map, always: {map}"
                );
                assert!(
                    map["sold"].as_u64().unwrap() >= 3,
                    "never a half-built model: {map}"
                );
                reads += 1;
            }
            reads
        })
    };
    let writer = {
        let (app_url, client, bob, showtime) = (
            app.url("/v1/reservations"),
            app.client.clone(),
            bob.clone(),
            showtime.clone(),
        );
        tokio::spawn(async move {
            for seat in ["B1", "B2", "B3", "B4", "C1", "C2"] {
                let r = client
                    .post(&app_url)
                    .bearer_auth(&bob)
                    .json(&serde_json::json!({"showtime_id": showtime, "seats": [seat]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        })
    };
    let report = marquee::operator::replay(&app.pool, &[], false)
        .await
        .unwrap();
    assert_eq!(report.projections.len(), marquee_projections::all().len());
    writer.await.unwrap();
    stop.cancel();
    assert!(reader.await.unwrap() > 0);
    app.settle().await;
    for p in marquee_projections::all() {
        let schema = format!("check_{}", p.name());
        rebuild_into(&app.pool, p.as_ref(), &schema).await.unwrap();
        for table in p.tables() {
            assert_eq!(
                differences(&app.pool, table, "public", &schema)
                    .await
                    .unwrap(),
                0,
                "{table}"
            );
        }
    }
    // The swapped-in tables kept their index names.
    let index: i64 = sqlx::query_scalar("select count(*) from pg_indexes where schemaname = 'public' and indexname = 'theaters_view_earth_idx'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(index, 1);
}

#[tokio::test]
async fn exporting_streams_every_matching_event_as_ndjson_or_csv() {
    use marquee::operator::{export, Format};
    use marquee_event_store::history::Filter;
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    app.hold(&ann, &showtime, &["A1"]).await;
    app.hold(&ann, &showtime, &["A2"]).await;
    app.wait_for_history().await;
    let filter = Filter {
        aggregate_id: Some(showtime.clone()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let summary = export(&app.pool, &filter, 0, Format::Ndjson, &mut out, false)
        .await
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ShowtimeScheduled",
            "SeatsHeld",
            "HoldReleased",
            "SeatsHeld"
        ]
    );
    assert_eq!(summary.events, 4);
    assert_eq!(lines[1]["payload"]["seats"], serde_json::json!(["A1"]));

    let mut out = Vec::new();
    let only_holds = Filter {
        event_type: Some("SeatsHeld".into()),
        ..filter
    };
    export(&app.pool, &only_holds, 0, Format::Csv, &mut out, false)
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][5], "SeatsHeld");
    let payload: Value = serde_json::from_str(&rows[1][7]).unwrap();
    assert_eq!(payload["seats"], serde_json::json!(["A2"]));
}

#[tokio::test]
async fn an_event_stored_in_an_older_version_still_reads_everywhere() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let hold: Value = app.held(&ann, &showtime, &["A1"]).await;
    let reservation = hold["id"].as_str().unwrap();
    app.settle().await;
    // A payment started and failed, written by an older Marquee: PaymentFailed version 1 had
    // no `retryable`. (Appended straight into the log, as that version would have.)
    let payment = uuid::Uuid::now_v7();
    let now = Utc::now();
    let started = serde_json::json!({"PaymentStarted": {"reservation_id": reservation, "payment_id": payment,
        "amount": {"amount": 1250, "currency": "USD"}, "started_at": now, "pinned_until": now + TimeDelta::minutes(10)}});
    let failed_v1 = serde_json::json!({"PaymentFailed": {"reservation_id": reservation, "payment_id": payment,
        "reason": "card_declined", "failed_at": now}});
    for (sequence, event_type, payload) in [
        (3, "PaymentStarted", started),
        (4, "PaymentFailed", failed_v1),
    ] {
        append(
            &app.pool,
            &[event(
                "Showtime", &showtime, sequence, event_type, "1", payload,
            )],
        )
        .await;
    }
    // A fresh engine on the same database folds it (the writer loads the showtime)...
    let restarted = spawn_with(app.config.clone()).await;
    let r: Value = restarted
        .get(&format!("/v1/reservations/{reservation}"), Some(&ann))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "held", "a failed payment leaves the hold");
    // ...and the projections applied it.
    let map = restarted.seat_statuses(&showtime, Some(&ann)).await;
    assert_eq!(seat_status(&map, "A1"), ("held".into(), true));
    let parked: i64 = sqlx::query_scalar("select count(*) from parked_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(parked, 0);
    // Paying again works on top of it.
    let paid = restarted.pay(&ann, reservation, "4242424242424242").await;
    assert_eq!(paid.status(), StatusCode::CREATED);
}
