//! The command side's lookup rows: recording a whole batch of events at once leaves exactly
//! the rows that recording them one at a time, in order, leaves. Each test has a database
//! without an engine: an engine's reconciler would pay (and remove) the refunds meanwhile.

use chrono::{Duration, Utc};
use marquee_domain::showtime::{
    IssuedTicket, PaymentFailed, PaymentStarted, ReleaseReason, SeatsHeld, Showtime, ShowtimeEvent,
    TicketRefunded, TicketsIssued,
};
use marquee_domain::{
    Currency, Money, PaymentId, ReservationId, SeatLabel, ShowtimeId, TicketId, UserId,
};
use marquee_event_store::append::{to_new_events, Batch, NewEvent};
use marquee_event_store::booking_index;
use marquee_event_store::error::StoreError;
use marquee_event_store::metadata::{Actor, Metadata};
use marquee_test_support::fresh_database;
use sqlx::PgPool;
use uuid::Uuid;

/// Every lookup table, as sorted text rows.
async fn lookups(pool: &PgPool) -> Vec<Vec<String>> {
    let mut tables = Vec::new();
    for query in [
        "select reservation_id::text || showtime_id || customer_id from reservation_index",
        "select ticket_id::text || showtime_id || reservation_id || customer_id from ticket_index",
        "select reservation_id::text || showtime_id || expires_at || due_at from hold_timers",
        "select payment_id::text || showtime_id || reservation_id || started_at || pinned_until
         from payments_in_flight",
        "select refund_id || payment_id || amount || currency || recorded_at from refunds_due",
    ] {
        let mut rows: Vec<String> = sqlx::query_scalar(query).fetch_all(pool).await.unwrap();
        rows.sort();
        tables.push(rows);
    }
    tables
}

async fn clear(pool: &PgPool) {
    sqlx::query(
        "truncate reservation_index, ticket_index, hold_timers, payments_in_flight, refunds_due",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A batch with every kind of event, including a hold released and a payment failed and
/// retried within it, so the gathered writes and the one-by-one ones must interleave right.
fn story() -> Vec<ShowtimeEvent> {
    let t0 = Utc::now();
    let eur = Currency::parse("EUR").unwrap();
    let price = Money::new(1500, eur).unwrap();
    let customer = UserId(Uuid::now_v7());
    let [r1, r2, r3, r4] = [(); 4].map(|_| ReservationId(Uuid::now_v7()));
    let [p1, p2, p3] = [(); 3].map(|_| PaymentId(Uuid::now_v7()));
    let [k1, k2] = [(); 2].map(|_| TicketId(Uuid::now_v7()));
    let held = |r: ReservationId, seat: &str, minutes: i64| {
        ShowtimeEvent::SeatsHeld(SeatsHeld {
            reservation_id: r,
            customer_id: customer,
            seats: vec![SeatLabel::parse(seat).unwrap()],
            total: price.clone(),
            held_at: t0,
            expires_at: t0 + Duration::minutes(minutes),
            row_started_at: None,
        })
    };
    let started = |r: ReservationId, p: PaymentId| {
        ShowtimeEvent::PaymentStarted(PaymentStarted {
            reservation_id: r,
            payment_id: p,
            amount: price.clone(),
            started_at: t0,
            pinned_until: t0 + Duration::minutes(20),
        })
    };
    let ticket = |k: TicketId, seat: &str| IssuedTicket {
        ticket_id: k,
        seat: SeatLabel::parse(seat).unwrap(),
        price: price.clone(),
        code: format!("code-{k}"),
    };
    vec![
        held(r1, "A1", 7),
        held(r2, "A2", 7),
        ShowtimeEvent::HoldReleased {
            reservation_id: r1,
            reason: ReleaseReason::Customer,
            released_at: t0,
        },
        started(r2, p1),
        ShowtimeEvent::PaymentFailed(PaymentFailed {
            reservation_id: r2,
            payment_id: p1,
            reason: "declined".into(),
            retryable: true,
            failed_at: t0,
        }),
        held(r3, "A3", 5),
        started(r2, p2),
        ShowtimeEvent::TicketsIssued(TicketsIssued {
            reservation_id: r2,
            payment_id: p2,
            customer_id: customer,
            tickets: vec![ticket(k1, "A2"), ticket(k2, "A4")],
            issued_at: t0,
        }),
        ShowtimeEvent::HoldExpired {
            reservation_id: r3,
            expired_at: t0,
        },
        held(r4, "A5", 7),
        started(r4, p3),
        ShowtimeEvent::PaymentRefunded {
            reservation_id: r4,
            payment_id: p3,
            amount: price.clone(),
            refunded_at: t0,
        },
        ShowtimeEvent::TicketRefunded(TicketRefunded {
            ticket_id: k1,
            reservation_id: r2,
            payment_id: p2,
            amount: price.clone(),
            refunded_at: t0,
        }),
        held(ReservationId(Uuid::now_v7()), "A6", 7),
    ]
}

#[tokio::test]
async fn a_batch_leaves_the_rows_that_its_events_one_by_one_leave() {
    let pool = &fresh_database().await;
    let showtime = ShowtimeId(Uuid::now_v7());
    let events = story();

    clear(pool).await;
    for event in &events {
        let mut tx = pool.begin().await.unwrap();
        booking_index::record(&mut tx, showtime, std::slice::from_ref(event))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let one_by_one = lookups(pool).await;

    clear(pool).await;
    let mut tx = pool.begin().await.unwrap();
    booking_index::record(&mut tx, showtime, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let batched = lookups(pool).await;

    assert_eq!(batched, one_by_one);
    // What the story leaves: five reservations, two tickets, the timers of the two holds
    // neither released, expired nor ticketed (a refunded payment leaves its hold's timer),
    // no payment in flight, two refunds due. So the comparison is not between empty tables.
    let sizes: Vec<usize> = batched.iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 2, 2, 0, 2], "{batched:?}");
}

/// A batch of common events only (holds, releases, expiries, tickets) after a payment that
/// started earlier, so every lookup table is touched.
fn common_story() -> (Vec<ShowtimeEvent>, Vec<ShowtimeEvent>) {
    let story = story();
    // The first hold, the second hold and its first payment, recorded before the batch.
    let before = vec![story[1].clone(), story[6].clone()];
    let batch = vec![
        story[0].clone(), // r1 held
        story[5].clone(), // r3 held
        story[2].clone(), // r1 released
        story[7].clone(), // r2 ticketed, which settles its payment
        story[8].clone(), // r3 expired
        story[9].clone(), // r4 held
    ];
    (before, batch)
}

#[tokio::test]
async fn a_batch_of_common_events_in_one_statement_leaves_the_rows_of_one_by_one() {
    let pool = &fresh_database().await;
    let showtime = ShowtimeId(Uuid::now_v7());
    let (before, batch) = common_story();
    assert!(
        booking_index::gather(&story()).is_none(),
        "payments and refunds take the statement-by-statement way"
    );
    let record = |events: Vec<ShowtimeEvent>| async move {
        let mut tx = pool.begin().await.unwrap();
        booking_index::record(&mut tx, showtime, &events)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };

    clear(pool).await;
    record(before.clone()).await;
    for event in &batch {
        record(vec![event.clone()]).await;
    }
    let one_by_one = lookups(pool).await;

    clear(pool).await;
    record(before).await;
    let rows = to_new_events::<Showtime>(
        &showtime.to_string(),
        0,
        &batch,
        &Metadata::engine(Actor::System),
    );
    alone(showtime, rows.clone(), &batch)
        .write_alone(pool)
        .await
        .unwrap();
    let together = lookups(pool).await;

    assert_eq!(together, one_by_one);
    // Four reservations (the index keeps every one), two tickets, the timer of the last hold,
    // no payment in flight: not a comparison of empty tables.
    let sizes: Vec<usize> = together.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 2, 1, 0, 0], "{together:?}");
    let stored: i64 = sqlx::query_scalar("select count(*) from events where aggregate_id = $1")
        .bind(showtime.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, batch.len() as i64);

    // The same sequences again conflict, and the batch's lookups are not written twice.
    clear(pool).await;
    let again = alone(showtime, rows, &batch).write_alone(pool).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert!(lookups(pool).await.iter().all(Vec::is_empty));
}

/// A batch of common events with the lookups they imply.
fn alone(showtime: ShowtimeId, rows: Vec<NewEvent>, events: &[ShowtimeEvent]) -> Batch {
    Batch {
        showtime,
        rows,
        lookups: booking_index::gather(events).expect("common events only"),
    }
}

/// Events of one showtime, numbered from 1, ready to append.
fn rows_of(showtime: ShowtimeId, events: &[ShowtimeEvent]) -> Vec<NewEvent> {
    to_new_events::<Showtime>(
        &showtime.to_string(),
        0,
        events,
        &Metadata::engine(Actor::System),
    )
}

#[tokio::test]
async fn a_group_commit_writes_every_batch_but_one_whose_showtime_was_written_first() {
    use marquee_event_store::append::write;
    let pool = &fresh_database().await;
    let story = story();
    let [s1, s2, s3] = [(); 3].map(|_| ShowtimeId(Uuid::now_v7()));
    // r1 held and released, r3 held; r2 held (its showtime taken first); r4 held.
    let first = vec![story[0].clone(), story[5].clone(), story[2].clone()];
    let second = vec![story[1].clone()];
    let third = vec![story[9].clone()];
    // Another process wrote the second showtime's first event meanwhile.
    let other = vec![story[13].clone()];
    alone(s2, rows_of(s2, &other), &other)
        .write_alone(pool)
        .await
        .unwrap();

    let batch = |showtime, events: &Vec<ShowtimeEvent>| Batch {
        showtime,
        rows: rows_of(showtime, events),
        lookups: booking_index::gather(events).unwrap(),
    };
    let written = write(
        pool,
        vec![batch(s1, &first), batch(s2, &second), batch(s3, &third)],
    )
    .await
    .unwrap();
    assert_eq!(written, [true, false, true]);
    let together = lookups(pool).await;

    // The same rows as recording the written batches' events one by one.
    clear(pool).await;
    for (showtime, events) in [(s2, &other), (s1, &first), (s3, &third)] {
        for event in events {
            let mut tx = pool.begin().await.unwrap();
            booking_index::record(&mut tx, showtime, std::slice::from_ref(event))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    assert_eq!(together, lookups(pool).await);
    let sizes: Vec<usize> = together.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 0, 3, 0, 0], "{together:?}");
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "select aggregate_id, count(*) from events group by aggregate_id order by aggregate_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut expected = vec![
        (s1.to_string(), 3),
        (s2.to_string(), 1),
        (s3.to_string(), 1),
    ];
    expected.sort();
    assert_eq!(stored, expected);
}
