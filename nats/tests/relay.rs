//! The relay against real Postgres and real NATS JetStream.

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use marquee_event_store::envelope::Envelope;
use marquee_nats::outbox::{Cursor, Leadership};
use marquee_nats::relay::Relay;
use marquee_nats::testing::fresh_namespace;
use marquee_nats::Namespace;
use marquee_test_support::{append, append_in, event, fresh_database, NewEvent};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn nats() -> async_nats::Client {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    async_nats::connect(url).await.expect("NATS is running")
}

/// The `sequence`th event of the test aggregate `aggregate`.
fn happened(aggregate: &str, sequence: i64) -> NewEvent {
    event(
        "Test",
        aggregate,
        sequence,
        "Happened",
        "1",
        serde_json::json!({}),
    )
}

/// Every message in the stream, in stream order.
async fn published(client: &async_nats::Client, ns: &Namespace) -> Vec<Envelope> {
    let js = jetstream::new(client.clone());
    let Ok(mut stream) = js.get_stream(ns.stream()).await else {
        return vec![];
    };
    let total = stream.info().await.unwrap().state.messages as usize;
    if total == 0 {
        return vec![];
    }
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(total)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        out.push(serde_json::from_slice(&m.unwrap().payload).unwrap());
    }
    out
}

async fn wait_for(client: &async_nats::Client, ns: &Namespace, count: usize) -> Vec<Envelope> {
    for _ in 0..200 {
        let got = published(client, ns).await;
        if got.len() >= count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    published(client, ns).await
}

fn start(
    pool: &PgPool,
    client: &async_nats::Client,
    ns: &Namespace,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let relay = Relay::new(pool.clone(), client.clone(), ns.clone());
    (stop.clone(), tokio::spawn(relay.run(stop)))
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_published_not_skipped() {
    let pool = fresh_database().await;
    let client = nats().await;
    let ns = fresh_namespace();

    // A long transaction takes position 1 first and stays open...
    let mut long = pool.begin().await.unwrap();
    append_in(&mut long, &[happened("late", 1)]).await;
    // ...while short ones take positions 2 and 3 and commit.
    append(&pool, &[happened("early", 1)]).await;
    append(&pool, &[happened("early", 2)]).await;

    let (stop, relay) = start(&pool, &client, &ns);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Nothing may pass the open transaction: publishing 2 and 3 now and moving the
    // checkpoint past them would skip 1 for good.
    assert_eq!(published(&client, &ns).await.len(), 0);

    long.commit().await.unwrap();
    let got = wait_for(&client, &ns, 3).await;
    let ids: Vec<String> = got.iter().map(Envelope::message_id).collect();
    assert_eq!(ids, ["Test:late:1", "Test:early:1", "Test:early:2"]);
    stop.cancel();
    relay.await.unwrap();

    // A restarted relay resumes from its checkpoint: nothing twice.
    append(&pool, &[happened("early", 3)]).await;
    let (stop, relay) = start(&pool, &client, &ns);
    let got = wait_for(&client, &ns, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(published(&client, &ns).await.len(), 4, "{got:?}");
    stop.cancel();
    relay.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_committing_out_of_order_are_all_published_once_in_aggregate_order() {
    let pool = fresh_database().await;
    let client = nats().await;
    let ns = fresh_namespace();
    let (stop, relay) = start(&pool, &client, &ns);

    // 8 aggregates, 6 transactions each, each transaction appending 1 to 3 events and holding
    // its transaction open for a while before committing: commits interleave out of order.
    let writers = (0..8).map(|a| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut sequence = 0;
            for round in 0..6 {
                let mut tx = pool.begin().await.unwrap();
                for _ in 0..(1 + (a + round) % 3) {
                    sequence += 1;
                    append_in(&mut tx, &[happened(&format!("agg{a}"), sequence)]).await;
                }
                tokio::time::sleep(Duration::from_millis(((a * 7 + round * 13) % 40) as u64)).await;
                tx.commit().await.unwrap();
            }
            sequence
        })
    });
    let mut expected = HashMap::new();
    for (a, w) in writers.enumerate() {
        expected.insert(format!("agg{a}"), w.await.unwrap());
    }
    let total: i64 = expected.values().sum();
    let got = wait_for(&client, &ns, total as usize).await;
    assert_eq!(
        got.len() as i64,
        total,
        "every event published exactly once"
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in &got {
        let prev = last.insert(e.aggregate_id.clone(), e.sequence).unwrap_or(0);
        assert_eq!(e.sequence, prev + 1, "{} out of order", e.message_id());
    }
    assert_eq!(last, expected);
    stop.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn only_one_relay_publishes_and_a_standby_takes_over() {
    let pool = fresh_database().await;
    let client = nats().await;
    let ns = fresh_namespace();
    let (stop_a, relay_a) = start(&pool, &client, &ns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stop_b, relay_b) = start(&pool, &client, &ns);
    append(&pool, &[happened("x", 1)]).await;
    wait_for(&client, &ns, 1).await;
    // The active relay goes away; the standby must carry on.
    stop_a.cancel();
    relay_a.await.unwrap();
    append(&pool, &[happened("x", 2)]).await;
    let got = wait_for(&client, &ns, 2).await;
    assert_eq!(got.len(), 2);
    stop_b.cancel();
    relay_b.await.unwrap();
}

/// Ends the session holding the namespace's relay lock, as a network cut or an operator would.
async fn kill_lock_holder(pool: &PgPool, ns: &Namespace) {
    let killed: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_locks
         where locktype = 'advisory' and granted
           and database = (select oid from pg_database where datname = current_database())
           and ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(ns.relay_lock_key())
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "exactly one session held the lock");
}

/// Takes the leadership as soon as the killed holder's session has ended.
async fn take_over(pool: &PgPool, ns: &Namespace) -> Leadership {
    for _ in 0..100 {
        if let Some(leadership) = Leadership::try_take(pool, ns).await.unwrap() {
            return leadership;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the lock was never released");
}

fn cursor(tx_id: &str, position: i64) -> Cursor {
    Cursor {
        tx_id: tx_id.into(),
        position,
    }
}

async fn stored_checkpoint(pool: &PgPool, ns: &Namespace) -> Option<(String, i64)> {
    sqlx::query_as("select tx_id::text, position from relay_checkpoints where name = $1")
        .bind(ns.as_str())
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deposed_leader_cannot_move_the_checkpoint() {
    let pool = fresh_database().await;
    let ns = fresh_namespace();
    let mut deposed = Leadership::try_take(&pool, &ns).await.unwrap().unwrap();
    deposed.save(&cursor("100", 1)).await.unwrap();
    kill_lock_holder(&pool, &ns).await;
    let mut leader = take_over(&pool, &ns).await;
    leader.save(&cursor("200", 2)).await.unwrap();

    // Further than the new leader's: saved, this would skip what the new leader has not
    // published yet.
    let late = deposed.save(&cursor("300", 3)).await;
    assert!(late.is_err(), "a deposed leader saved its checkpoint");
    assert_eq!(leader.checkpoint().await.unwrap(), cursor("200", 2));
}

#[tokio::test]
async fn a_stale_save_cannot_move_the_checkpoint_back() {
    let pool = fresh_database().await;
    let ns = fresh_namespace();
    let mut leader = Leadership::try_take(&pool, &ns).await.unwrap().unwrap();
    leader.save(&cursor("300", 5)).await.unwrap();
    // An earlier transaction with a later position, then the same transaction further back:
    // both precede the stored point in (tx_id, position) order.
    leader.save(&cursor("200", 9)).await.unwrap();
    leader.save(&cursor("300", 4)).await.unwrap();
    assert_eq!(leader.checkpoint().await.unwrap(), cursor("300", 5));
    leader.save(&cursor("300", 6)).await.unwrap();
    assert_eq!(leader.checkpoint().await.unwrap(), cursor("300", 6));
}

#[tokio::test]
async fn a_relay_whose_lock_session_is_killed_stops_publishing_until_it_leads_again() {
    let pool = fresh_database().await;
    let client = nats().await;
    let ns = fresh_namespace();
    let (stop, relay) = start(&pool, &client, &ns);
    append(&pool, &[happened("x", 1)]).await;
    wait_for(&client, &ns, 1).await;
    let checkpoint = stored_checkpoint(&pool, &ns).await;

    // Another relay (played by this test) takes the lock the moment the session dies.
    kill_lock_holder(&pool, &ns).await;
    let mut other = pool.acquire().await.unwrap().detach();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(ns.relay_lock_key())
        .execute(&mut other)
        .await
        .unwrap();
    append(&pool, &[happened("x", 2)]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        published(&client, &ns).await.len(),
        1,
        "the deposed relay published"
    );
    assert_eq!(stored_checkpoint(&pool, &ns).await, checkpoint);

    // The other relay goes away: the first one leads again and catches up.
    drop(other);
    assert_eq!(wait_for(&client, &ns, 2).await.len(), 2);
    stop.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn events_the_stream_lost_from_its_end_are_republished() {
    let pool = fresh_database().await;
    let client = nats().await;
    let ns = fresh_namespace();
    for sequence in 1..=10 {
        append(&pool, &[happened("x", sequence)]).await;
    }
    let (stop, relay) = start(&pool, &client, &ns);
    wait_for(&client, &ns, 10).await;
    stop.cancel();
    relay.await.unwrap();

    // NATS loses the three most recent messages (its storage restored from an older copy,
    // say) while the checkpoint says they were published.
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(ns.stream()).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    for sequence in last - 2..=last {
        assert!(stream.delete_message(sequence).await.unwrap());
    }
    assert_eq!(published(&client, &ns).await.len(), 7);

    let (stop, relay) = start(&pool, &client, &ns);
    let got = wait_for(&client, &ns, 10).await;
    let ids: Vec<String> = got.iter().map(Envelope::message_id).collect();
    let expected: Vec<String> = (1..=10).map(|s| format!("Test:x:{s}")).collect();
    assert_eq!(ids, expected);
    stop.cancel();
    relay.await.unwrap();
}
