//! What a process keeps in memory stays bounded: showtime writers (one per showtime, with its
//! state, which drops closed holds and starts from a snapshot) and entries of the live
//! seat-map hub.

use crate::helpers::{
    fresh_database_url, spawn_app, spawn_roles, spawn_with, test_config, TestApp,
};
use marquee::startup::Roles;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// Polls `done` every 20 ms for up to 10 seconds; whether it came true.
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Opens a seat-map stream and returns its `snapshot` event's data, keeping the response
/// open (dropping it hangs up).
async fn snapshot(app: &TestApp, showtime: &str) -> (reqwest::Response, Value) {
    let mut response = app
        .client
        .get(app.url(&format!("/v1/showtimes/{showtime}/seats/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut buffer = String::new();
    while !buffer.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a snapshot in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = buffer
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("the snapshot has data");
    (response, serde_json::from_str(data).unwrap())
}

/// A process serving the API only, on the same database as `app` (no writer started yet).
async fn second_process(app: &TestApp) -> TestApp {
    let api_only = Roles {
        api: true,
        relay: false,
        projector: false,
    };
    spawn_roles(app.config.clone(), api_only).await
}

#[tokio::test]
async fn reading_and_streaming_cancelled_or_unknown_showtimes_starts_no_writer() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    let reservation = app.hold_id(&ann, &showtime, &["A1"]).await;
    let admin = app.admin().await;
    let cancelled = app
        .delete(&format!("/v1/showtimes/{showtime}"), Some(&admin))
        .await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let (_open, from_writer) = snapshot(&app, &showtime).await;
    let other = second_process(&app).await;

    let (_open, from_store) = snapshot(&other, &showtime).await;
    let hold = other
        .get(&format!("/v1/reservations/{reservation}"), Some(&ann))
        .await;
    assert_eq!(hold.status(), StatusCode::OK);
    assert_eq!(hold.json::<Value>().await.unwrap()["status"], "released");
    for _ in 0..5 {
        let unknown = Uuid::new_v4();
        let streamed = other
            .get(&format!("/v1/showtimes/{unknown}/seats/stream"), None)
            .await;
        assert_eq!(streamed.status(), StatusCode::NOT_FOUND);
        let read = other.get(&format!("/v1/showtimes/{unknown}"), None).await;
        assert_eq!(read.status(), StatusCode::NOT_FOUND);
    }

    assert_eq!(other.state.writers.running(), 0);
    assert_eq!(from_store, from_writer, "the same answer as from a writer");
    assert_eq!(from_store["available"], 24);
}

#[tokio::test]
async fn past_the_writer_cap_the_least_recently_used_idle_writer_stops_and_restarts_from_the_store()
{
    let mut config = test_config(&fresh_database_url());
    config.max_writers = 2;
    let app = spawn_with(config).await;
    let ann = app.customer().await;
    let mut showtimes = vec![];
    let mut holds = vec![];
    for _ in 0..3 {
        let showtime = app.showtime().await;
        holds.push(app.hold_id(&ann, &showtime, &["A1"]).await);
        showtimes.push(showtime);
    }

    let writers = &app.state.writers;
    assert!(
        eventually(|| writers.running() <= 2).await,
        "{} writers run with a cap of 2",
        writers.running()
    );

    // The first showtime's writer was the one stopped: its state comes back from the store.
    let bob = app.customer().await;
    let taken = app.hold(&bob, &showtimes[0], &["A1"]).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    app.held(&bob, &showtimes[0], &["A2"]).await;
    let first = app
        .get(&format!("/v1/reservations/{}", holds[0]), Some(&ann))
        .await;
    assert_eq!(first.json::<Value>().await.unwrap()["status"], "held");
    let (_open, map) = snapshot(&app, &showtimes[0]).await;
    assert_eq!(map["held"], 2);
    assert!(eventually(|| writers.running() <= 2).await);
}

#[tokio::test]
async fn a_stream_that_closes_leaves_no_entry_in_the_live_hub() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let live = &app.state.live;

    let (open, _) = snapshot(&app, &showtime).await;
    assert_eq!(live.entries(), 1);
    drop(open);

    assert!(
        eventually(|| live.entries() == 0).await,
        "{} entries left after the only watcher hung up",
        live.entries()
    );
}

#[tokio::test]
async fn a_watcher_that_never_reads_queues_no_more_than_the_backlog_and_is_told_it_lagged() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let id: Uuid = showtime.parse().unwrap();
    let live = &app.state.live;
    let (_, mut slow) = live
        .watch(&app.state.writers, id, |_, sequence| sequence)
        .await
        .unwrap()
        .expect("the showtime exists");
    let ann = app.customer().await;

    // Each hold after the first releases the one before: two seat changes a hold.
    let changes = marquee_api::live::BACKLOG + 40;
    for i in 0..changes / 2 {
        app.held(&ann, &showtime, &[["A1", "A2"][i % 2]]).await;
    }

    assert!(
        eventually(|| live.queued(id) == marquee_api::live::BACKLOG).await,
        "{} queued",
        live.queued(id)
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // the last events arrive
    assert!(live.queued(id) <= marquee_api::live::BACKLOG);
    assert!(matches!(
        slow.recv().await,
        Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
    ));
}

/// The reservations the showtime's writer keeps, by id.
async fn kept_holds(app: &TestApp, showtime: &str) -> Vec<String> {
    let id = marquee_domain::ShowtimeId(showtime.parse().unwrap());
    let shared = app
        .state
        .writers
        .state(id)
        .await
        .unwrap()
        .expect("the showtime exists");
    let committed = shared.read().unwrap();
    let mut kept: Vec<String> = committed
        .showtime
        .holds
        .keys()
        .map(|r| r.0.to_string())
        .collect();
    kept.sort();
    kept
}

#[tokio::test]
async fn closed_holds_leave_the_showtime_state_and_still_answer_by_id_from_the_log() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let (ann, bob, cy) = (
        app.customer().await,
        app.customer().await,
        app.customer().await,
    );
    let released = app.hold_id(&ann, &showtime, &["A1"]).await;
    let gone = app
        .delete(&format!("/v1/reservations/{released}"), Some(&ann))
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let replaced = app.hold_id(&ann, &showtime, &["A2"]).await;
    let open = app.hold_id(&ann, &showtime, &["A3", "A4"]).await;
    let paid = app.hold_id(&bob, &showtime, &["B1"]).await;
    assert_eq!(
        app.pay(&bob, &paid, "4242424242424242").await.status(),
        StatusCode::CREATED
    );
    let running_out = app.hold_id(&cy, &showtime, &["C1"]).await;

    let mut expected = vec![open.clone(), paid.clone(), running_out.clone()];
    expected.sort();
    assert_eq!(kept_holds(&app, &showtime).await, expected);

    // The timer's expiry, decided well past the hold's deadline (the last command of this
    // showtime: its clock never goes back).
    let expire = marquee_domain::showtime::ShowtimeCommand::ExpireHold(
        marquee_domain::showtime::ExpireHold {
            reservation_id: marquee_domain::ReservationId(running_out.parse().unwrap()),
            now: marquee_event_store::event_store::now() + chrono::TimeDelta::hours(1),
        },
    );
    let recorded = app
        .state
        .writers
        .execute(
            marquee_domain::ShowtimeId(showtime.parse().unwrap()),
            expire,
            marquee_event_store::metadata::Metadata::engine(
                marquee_event_store::metadata::Actor::Timer,
            ),
        )
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    let mut expected = vec![open.clone(), paid.clone()];
    expected.sort();
    assert_eq!(kept_holds(&app, &showtime).await, expected);

    for (id, owner, status, seats) in [
        (&released, &ann, "released", vec!["A1"]),
        (&replaced, &ann, "released", vec!["A2"]),
        (&running_out, &cy, "expired", vec!["C1"]),
        (&paid, &bob, "confirmed", vec!["B1"]),
    ] {
        let read = app
            .get(&format!("/v1/reservations/{id}"), Some(owner))
            .await;
        assert_eq!(read.status(), StatusCode::OK, "{status} {id}");
        let body: Value = read.json().await.unwrap();
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["seats"], serde_json::json!(seats), "{body}");
        assert_eq!(body["total"]["amount"].as_i64().map(|a| a > 0), Some(true));
        // Someone else's stays unknown.
        let foreign = app.get(&format!("/v1/reservations/{id}"), Some(&bob)).await;
        if owner != &bob {
            assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
        }
    }
    for (id, owner) in [(&released, &ann), (&running_out, &cy)] {
        let again = app
            .delete(&format!("/v1/reservations/{id}"), Some(owner))
            .await;
        assert_eq!(again.status(), StatusCode::NO_CONTENT);
        let paying = app.pay(owner, id, "4242424242424242").await;
        assert_eq!(paying.status(), StatusCode::GONE);
    }
}

/// The sequence of the showtime's stored snapshot, once there is one.
async fn snapshot_sequence(app: &TestApp, showtime: &str) -> Option<i64> {
    for _ in 0..250 {
        let stored: Option<i64> =
            sqlx::query_scalar("select sequence from showtime_snapshots where showtime_id = $1")
                .bind(showtime)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if stored.is_some() {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_showtime_loads_from_its_latest_snapshot_and_the_events_after_it() {
    let mut config = test_config(&fresh_database_url());
    // Eight events below: one snapshot, then events after it.
    config.snapshot_every = 5;
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let (ann, bob, cy) = (
        app.customer().await,
        app.customer().await,
        app.customer().await,
    );
    let first = app.hold_id(&ann, &showtime, &["A1"]).await;
    app.delete(&format!("/v1/reservations/{first}"), Some(&ann))
        .await;
    app.held(&ann, &showtime, &["A2", "A3"]).await;
    let paid = app.hold_id(&bob, &showtime, &["B1"]).await;
    assert_eq!(
        app.pay(&bob, &paid, "4242424242424242").await.status(),
        StatusCode::CREATED
    );
    let taken = snapshot_sequence(&app, &showtime)
        .await
        .expect("a snapshot after 5 events");
    assert!(taken >= 5, "snapshot at {taken}");
    app.held(&cy, &showtime, &["C1"]).await;

    let id = marquee_domain::ShowtimeId(showtime.parse().unwrap());
    let store = &app.state.store;
    let full = || async {
        let (state, version) = store
            .load::<marquee_domain::showtime::Showtime>(&showtime)
            .await
            .unwrap();
        (serde_json::to_value(state).unwrap(), version)
    };
    let (folded, version) = full().await;
    let loaded = store.load_showtime(id).await.unwrap();
    assert!(loaded.snapshot >= 5, "started from {}", loaded.snapshot);
    assert!(loaded.version > loaded.snapshot, "with events after it");
    assert_eq!(loaded.version, version);
    assert_eq!(serde_json::to_value(&loaded.showtime).unwrap(), folded);

    // What it starts from is the snapshot: a mark put in it shows.
    sqlx::query(
        "update showtime_snapshots
         set state = jsonb_set(state, '{cancelled_at}', '\"2030-01-01T00:00:00Z\"')
         where showtime_id = $1",
    )
    .bind(&showtime)
    .execute(&app.pool)
    .await
    .unwrap();
    let marked = store.load_showtime(id).await.unwrap();
    assert!(marked.showtime.cancelled_at.is_some());

    // One of another format, or one that cannot be read, is ignored: the whole log is folded.
    for change in [
        "update showtime_snapshots set format = format + 1 where showtime_id = $1",
        "update showtime_snapshots set state = '{\"holds\": 1}' where showtime_id = $1",
    ] {
        sqlx::query(change)
            .bind(&showtime)
            .execute(&app.pool)
            .await
            .unwrap();
        let loaded = store.load_showtime(id).await.unwrap();
        assert_eq!(loaded.snapshot, 0, "{change}");
        assert_eq!(serde_json::to_value(&loaded.showtime).unwrap(), folded);
    }
}

#[tokio::test]
async fn a_showtime_loaded_far_past_its_latest_snapshot_stores_a_new_one_at_once() {
    let mut config = test_config(&fresh_database_url());
    config.snapshot_every = 1_000;
    let app = spawn_with(config).await;
    let showtime = app.showtime().await;
    let ann = app.customer().await;
    for seats in [["A1"], ["A2"], ["A3"]] {
        app.held(&ann, &showtime, &seats).await;
    }
    let events = app.event_types(&showtime).await.len() as i64;
    assert_eq!(snapshot_sequence(&app, &showtime).await, None);

    // Another process, snapshotting every 3 events, only reads the showtime.
    let mut config = app.config.clone();
    config.snapshot_every = 3;
    let reader = spawn_roles(
        config,
        Roles {
            api: true,
            relay: false,
            projector: false,
        },
    )
    .await;
    let (_open, _) = snapshot(&reader, &showtime).await;
    assert_eq!(snapshot_sequence(&app, &showtime).await, Some(events));
}
